-- stg_gateway_rows: CometAPI's ledger rows in the window, with tokens restated in OpenAI semantics.
-- Grain: one ledger row (consume, correction, refund, error). Input: lake/gateway_logs
-- ($gateway_log_files: the window's days). The gateway logs Anthropic-style rows with prompt_tokens
-- excluding the cache (usage_semantic = 'anthropic'); here prompt_tokens always includes cache reads
-- and writes, like the client side.
CREATE OR REPLACE TEMP TABLE stg_gateway_rows AS
SELECT
    request_id,
    created_at::TIMESTAMPTZ AS created_at,
    usage_date,
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
    source_ip
FROM read_parquet($gateway_log_files, hive_partitioning = false, union_by_name = true)
WHERE usage_date BETWEEN $start AND $end;
