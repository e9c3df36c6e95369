-- pack/sample_rows: the month's normalised request-log rows, from which the pack's sample of raw
-- responses is chosen (pipelines/lib/review_pack/sample.py), read from the lake, not from the warehouse.
-- Grain: one landed request-log row (request_id, with the inbox file and line it landed from).
-- Inputs: lake/request_logs (the Parquet files in $files: the UTC days covering the month).
-- Parameters: $files, $first, $last (the month's first and last reporting days; `reporting_day` is bound
-- on the connection, sql/staging/reporting_day.sql). The columns are sample.COLUMNS, in that order.
SELECT request_id, reporting_day(ts) AS usage_date, key_name, model, endpoint, usage_shape, usage_status,
       prompt_tokens, completion_tokens, total_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
       raw_usage_json, file, line_no
FROM read_parquet($files, hive_partitioning = false, union_by_name = true)
WHERE reporting_day(ts) BETWEEN $first AND $last
