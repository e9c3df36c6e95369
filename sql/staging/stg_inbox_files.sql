-- stg_inbox_files: the current version of every inbox file that was ever staged.
-- Grain: one row per inbox-relative path. Input: lake/inbox_manifest ($inbox_manifest_files).
-- A changed file is a new version (new file_id); the latest staged version of a path counts.
CREATE OR REPLACE TEMP TABLE stg_inbox_files AS
SELECT
    file_id,
    file,
    content_sha256,
    size_bytes,
    staged_at::TIMESTAMPTZ AS staged_at,
    lines_read,
    blank_lines,
    records,
    rejected,
    damaged,
    first_utc_date,
    last_utc_date
FROM read_parquet($inbox_manifest_files, hive_partitioning = false, union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY file ORDER BY staged_at DESC, file_id DESC) = 1;
