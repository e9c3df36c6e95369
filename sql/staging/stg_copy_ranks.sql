-- stg_copy_ranks: which copy of each request_id lands, for every request_id with a copy in [$start, $end].
-- Grain: one row per accepted inbox line (copy) of those ids, narrow: (file_id, line_no, request_id,
-- ts, utc_date, copy_rank). Parameters: $start, $end (UTC days, inclusive). Inputs: lake/inbox_records ($inbox_record_files), stg_inbox_files (only
-- current file versions count). copy_rank = 1 is the copy that lands; this file is the one place
-- the rule is written.
--
-- Which copy wins (independent of the order files arrive in):
--   1. a copy with usage (known, or per_call) beats one whose usage is unknown
--      (a complete log of a stream beats an interrupted one);
--   2. a copy from an undamaged file beats one from a file with a corrupt gzip stream;
--   3. then the earliest file (inbox-relative path), then the earliest line.
-- Every other copy is a duplicate of the file it sits in.
--
-- Only the columns the rule needs are read, so ranking every copy ever staged (inbox_files does)
-- stays affordable; the request ids with a copy in the window are found first, from
-- (file_id, request_id, utc_date) alone, with row groups outside the window skipped on their
-- utc_date statistics.
CREATE OR REPLACE TEMP TABLE stg_copy_ranks AS
WITH touched AS (
    SELECT DISTINCT r.request_id
    FROM read_parquet($inbox_record_files, hive_partitioning = false, union_by_name = true) AS r
    SEMI JOIN stg_inbox_files AS f ON f.file_id = r.file_id
    WHERE r.utc_date BETWEEN $start AND $end
),
copies AS (
    SELECT r.file_id, r.line_no, r.request_id, r.ts::TIMESTAMPTZ AS ts, r.utc_date, r.usage_status, r.file, f.damaged
    FROM read_parquet($inbox_record_files, hive_partitioning = false, union_by_name = true) AS r
    JOIN stg_inbox_files AS f ON f.file_id = r.file_id
    SEMI JOIN touched USING (request_id)
)
SELECT
    file_id, line_no, request_id, ts, utc_date,
    row_number() OVER (
        PARTITION BY request_id
        ORDER BY usage_status = 'unknown', damaged, file, line_no
    ) AS copy_rank
FROM copies;
