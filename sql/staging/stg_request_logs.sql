-- stg_request_logs: every copy of every request_id that has a copy in [$start, $end], ranked.
-- Grain: one row per accepted inbox line (copy). Inputs: lake/inbox_records ($inbox_record_files),
-- stg_inbox_files (only current file versions count). copy_rank = 1 is the copy that lands.
--
-- Which copy wins (independent of the order files arrive in):
--   1. a copy with usage (known, or per_call) beats one whose usage is unknown
--      (a complete log of a stream beats an interrupted one);
--   2. a copy from an undamaged file beats one from a file with a corrupt gzip stream;
--   3. then the earliest file (inbox-relative path), then the earliest line.
-- Every other copy is a duplicate of the file it sits in.
CREATE OR REPLACE TEMP TABLE stg_request_logs AS
WITH copies AS (
    SELECT r.*, f.damaged
    FROM read_parquet($inbox_record_files, hive_partitioning = false, union_by_name = true) AS r
    JOIN stg_inbox_files AS f ON f.file_id = r.file_id
),
touched AS (
    SELECT DISTINCT request_id FROM copies WHERE usage_date BETWEEN $start AND $end
)
SELECT
    copies.* EXCLUDE (damaged),
    row_number() OVER (
        PARTITION BY request_id
        ORDER BY usage_status = 'unknown', damaged, file, line_no
    ) AS copy_rank
FROM copies
SEMI JOIN touched USING (request_id);
