-- stg_request_logs: the copy that lands of every request_id with a copy in [$start, $end], whole.
-- Grain: one row per request_id (its copy_rank = 1 copy, see stg_copy_ranks for the rule). Inputs:
-- lake/inbox_records ($inbox_record_files: at least the files that hold a winner; the assembly passes
-- only those), stg_copy_ranks (run for the same window first).
CREATE OR REPLACE TEMP TABLE stg_request_logs AS
SELECT r.*
FROM read_parquet($inbox_record_files, hive_partitioning = false, union_by_name = true) AS r
SEMI JOIN (SELECT file_id, line_no FROM stg_copy_ranks WHERE copy_rank = 1) AS w
    ON w.file_id = r.file_id AND w.line_no = r.line_no;
