-- stg_client_requests: the requests your applications logged, in the window.
-- Grain: one request (request_id). Input: lake/request_logs ($request_log_files: the UTC days that cover
-- the window, and a schema-only file, so that days written before a column existed read it as NULL).
-- Parameters: $start, $end (reporting days, inclusive). usage_date is reporting_day(ts)
-- (sql/staging/reporting_day.sql): the lake keeps UTC days only.
-- task_id: a task's id as the gateway answered its submit (the reply's task id, which the request-log
-- normaliser keeps as response_id for the task shape); a later refund or correction of the task in
-- CometAPI's ledger names it in other.task_id (stg_gateway_rows.task_id).
CREATE OR REPLACE TEMP TABLE stg_client_requests AS
SELECT
    request_id, ts::TIMESTAMPTZ AS ts, reporting_day(ts) AS usage_date, key_name, model, endpoint, status, source_ip,
    usage_shape, usage_status,
    prompt_tokens, completion_tokens, total_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
    uncached_prompt_tokens, response_id, cache_write_5m_tokens, cache_write_1h_tokens, audio_prompt_tokens,
    image_prompt_tokens, web_search_requests, web_fetch_requests,
    CASE WHEN usage_shape = 'task' THEN response_id END AS task_id
FROM read_parquet($request_log_files, hive_partitioning = false, union_by_name = true)
WHERE reporting_day(ts) BETWEEN $start AND $end;
