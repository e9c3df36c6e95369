-- stg_gateway_rows: CometAPI's ledger rows in the window, with tokens restated in OpenAI semantics.
-- Grain: one ledger row (consume, correction, refund, error). Input: lake/gateway_logs
-- ($gateway_log_files: the UTC days that cover the window). usage_date is reporting_day(created_at)
-- (sql/staging/reporting_day.sql). The gateway logs Anthropic-style rows with prompt_tokens
-- excluding the cache (usage_semantic = 'anthropic'); here prompt_tokens always includes cache reads
-- and writes, like the client side. Rows written before the ledger kept request ids, response ids,
-- task and surcharge fields read those columns as absent (the schema-only file in $gateway_log_files
-- names every column): has_request_id true, the rest NULL or false.
-- has_unmodelled_price: billed with a tool surcharge, tiered billing (billing_mode) or 1-hour cache
-- writes (upstream service/text_quota.go), which the price table does not model.
-- The ratios the gateway applied (other.model_ratio ... model_price) and quota_units ride along for the
-- ledger-observed prices (sql/core/ledger_price_days.sql) and the quota check (stg_ledger_units.sql);
-- other_parse_error: `other` or one of its values could not be read (the ratios are then NULL).
CREATE OR REPLACE TEMP TABLE stg_gateway_rows AS
SELECT
    request_id,
    created_at::TIMESTAMPTZ AS created_at,
    reporting_day(created_at) AS usage_date,
    log_type,
    log_type_name,
    key_name,
    model,
    billed_usd::DECIMAL(18, 6) AS billed_usd,
    log_type = 2 AND NOT is_correction AS is_request,
    is_correction,
    billing_category,
    CASE WHEN usage_semantic = 'anthropic'
         THEN prompt_tokens + coalesce(cache_tokens, 0) + coalesce(cache_creation_tokens, 0)
         ELSE prompt_tokens END AS prompt_tokens,
    completion_tokens,
    coalesce(cache_tokens, 0) AS cached_tokens,
    coalesce(cache_creation_tokens, 0) AS cache_write_tokens,
    source_ip,
    coalesce(has_request_id, true) AS has_request_id,
    response_id,
    task_id,
    pre_consumed_quota,
    coalesce(is_subscription, false) AS is_subscription,
    billing_mode,
    coalesce(has_surcharge, false) OR billing_mode IS NOT NULL OR coalesce(cache_write_1h_tokens, 0) > 0
        AS has_unmodelled_price,
    coalesce(usage_estimated, false) AS usage_estimated,
    quota_units,
    usage_semantic,
    model_ratio, completion_ratio, cache_ratio, cache_creation_ratio, group_ratio, model_price,
    coalesce(other_parse_error, false) AS other_parse_error
FROM read_parquet($gateway_log_files, hive_partitioning = false, union_by_name = true)
WHERE reporting_day(created_at) BETWEEN $start AND $end;
