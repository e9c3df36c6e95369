-- previews/request_log_shapes: the landed request-log rows of the run per usage shape and usage status, read from the lake.
-- Grain: usage_shape x usage_status. Inputs: lake/request_logs (the Parquet files in $files).
-- Parameters: $files (the files the run wrote).
SELECT usage_shape, usage_status, count(*) FROM read_parquet($files) GROUP BY ALL ORDER BY ALL
