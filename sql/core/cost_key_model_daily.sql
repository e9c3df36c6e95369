-- cost_key_model_daily: each key-day's reported cost spread over its models, so that per-model and
-- per-category figures add up to exactly what CometAPI reported.
-- Grain: usage_date x key_name x model. Inputs: quota_daily, requests, stg_gateway_rows,
-- stg_gateway_coverage. Parameters: $start, $end: the window rebuilt.
--
-- Proportions: where the gateway ledger covers the key-day, its billed amounts per model (calls,
-- corrections and refunds; negative totals count as 0); otherwise estimated cost per model;
-- otherwise request counts. A key-day with nothing to spread over goes to model '(unattributed)'.
-- Rounding: largest remainder in micro-dollars (sql/macros/largest_remainder.sql), so each key-day sums to
-- the reported figure exactly.
CREATE TABLE IF NOT EXISTS cost_key_model_daily (
    usage_date DATE NOT NULL,
    key_name VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    billing_category VARCHAR,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cached_tokens BIGINT,
    reasoning_tokens BIGINT,
    estimated_cost_usd DOUBLE,
    billed_cost_usd DECIMAL(18, 6),
    allocation_basis VARCHAR NOT NULL,
    allocated_cost_usd DECIMAL(18, 6) NOT NULL
);
COMMENT ON TABLE cost_key_model_daily IS 'Reported cost per key-day spread over models (sums to the reported figure exactly)';
COMMENT ON COLUMN cost_key_model_daily.requests IS 'requests seen by your logs or the ledger';
COMMENT ON COLUMN cost_key_model_daily.estimated_cost_usd IS 'sum of priced estimates (NULL when none is priced)';
COMMENT ON COLUMN cost_key_model_daily.billed_cost_usd IS 'ledger amounts for the model: calls, corrections, refunds';
COMMENT ON COLUMN cost_key_model_daily.allocation_basis IS 'gateway_billed, estimated_cost, request_count or unattributed';
COMMENT ON COLUMN cost_key_model_daily.allocated_cost_usd IS 'share of the key-day''s reported cost (largest remainder, micro-dollars)';
COMMENT ON COLUMN cost_key_model_daily.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN cost_key_model_daily.key_name IS 'key display name';
COMMENT ON COLUMN cost_key_model_daily.model IS 'model as logged; (unattributed) when the key-day has nothing to spread over';
COMMENT ON COLUMN cost_key_model_daily.billing_category IS 'token or per_call (NULL: unknown)';
COMMENT ON COLUMN cost_key_model_daily.prompt_tokens IS 'all input tokens (cache included)';
COMMENT ON COLUMN cost_key_model_daily.completion_tokens IS 'output tokens (reasoning included)';
COMMENT ON COLUMN cost_key_model_daily.cached_tokens IS 'cache-read input tokens';
COMMENT ON COLUMN cost_key_model_daily.reasoning_tokens IS 'reasoning tokens (client logs only)';

BEGIN TRANSACTION;
DELETE FROM cost_key_model_daily WHERE usage_date BETWEEN $start AND $end;
INSERT INTO cost_key_model_daily
WITH per_model AS (
    SELECT
        usage_date, key_name, model,
        mode(billing_category) AS billing_category,
        count(*) AS requests,
        sum(prompt_tokens) AS prompt_tokens,
        sum(completion_tokens) AS completion_tokens,
        sum(cached_tokens) AS cached_tokens,
        sum(reasoning_tokens) AS reasoning_tokens,
        sum(estimated_cost_usd) AS estimated_cost_usd
    FROM requests
    WHERE usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
ledger AS (
    SELECT usage_date, key_name, model, sum(billed_usd) AS billed_cost_usd
    FROM stg_gateway_rows
    WHERE log_type IN (2, 6)
    GROUP BY ALL
),
models AS (
    SELECT
        coalesce(p.usage_date, g.usage_date) AS usage_date,
        coalesce(p.key_name, g.key_name) AS key_name,
        coalesce(p.model, g.model) AS model,
        p.billing_category,
        coalesce(p.requests, 0) AS requests,
        p.prompt_tokens, p.completion_tokens, p.cached_tokens, p.reasoning_tokens,
        p.estimated_cost_usd,
        CASE WHEN cov.usage_date IS NOT NULL THEN coalesce(g.billed_cost_usd, 0) END AS billed_cost_usd
    FROM per_model AS p
    FULL OUTER JOIN ledger AS g ON g.usage_date = p.usage_date AND g.key_name = p.key_name AND g.model = p.model
    LEFT JOIN stg_gateway_coverage AS cov ON cov.usage_date = coalesce(p.usage_date, g.usage_date)
),
reported AS (
    SELECT usage_date, key_name, reported_cost_usd FROM quota_daily WHERE usage_date BETWEEN $start AND $end
),
with_totals AS (
    SELECT
        m.*,
        sum(greatest(coalesce(m.billed_cost_usd, 0), 0)) OVER k AS billed_total,
        sum(coalesce(m.estimated_cost_usd, 0)) OVER k AS estimated_total,
        sum(m.requests) OVER k AS requests_total
    FROM models AS m
    WINDOW k AS (PARTITION BY m.usage_date, m.key_name)
),
weighted AS (
    SELECT
        w.*,
        CASE WHEN w.billed_total > 0 THEN 'gateway_billed'
             WHEN w.estimated_total > 0 THEN 'estimated_cost'
             WHEN w.requests_total > 0 THEN 'request_count' END AS allocation_basis,
        CASE WHEN w.billed_total > 0 THEN greatest(coalesce(w.billed_cost_usd, 0), 0)::DOUBLE / w.billed_total::DOUBLE
             WHEN w.estimated_total > 0 THEN coalesce(w.estimated_cost_usd, 0) / w.estimated_total
             WHEN w.requests_total > 0 THEN w.requests / w.requests_total END AS share
    FROM with_totals AS w
),
spread AS (
    -- every reported key-day, with its models (or one unattributed row)
    SELECT
        r.usage_date, r.key_name,
        coalesce(w.model, '(unattributed)') AS model,
        w.billing_category, coalesce(w.requests, 0) AS requests,
        w.prompt_tokens, w.completion_tokens, w.cached_tokens, w.reasoning_tokens,
        w.estimated_cost_usd, w.billed_cost_usd,
        coalesce(w.allocation_basis, 'unattributed') AS allocation_basis,
        coalesce(w.share, 1.0) AS share,
        (r.reported_cost_usd * 1000000)::HUGEINT AS micros
    FROM reported AS r
    LEFT JOIN weighted AS w ON w.usage_date = r.usage_date AND w.key_name = r.key_name AND w.share > 0
    UNION ALL
    -- models seen on key-days the query service did not report, or with no share: allocated 0
    SELECT
        w.usage_date, w.key_name, w.model, w.billing_category, w.requests,
        w.prompt_tokens, w.completion_tokens, w.cached_tokens, w.reasoning_tokens,
        w.estimated_cost_usd, w.billed_cost_usd, coalesce(w.allocation_basis, 'unattributed'), 0.0, 0
    FROM weighted AS w
    WHERE NOT EXISTS (SELECT 1 FROM reported AS r WHERE r.usage_date = w.usage_date AND r.key_name = w.key_name)
       OR coalesce(w.share, 0) <= 0
),
SELECT
    usage_date, key_name, model, billing_category, requests,
    prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
    estimated_cost_usd, billed_cost_usd::DECIMAL(18, 6), allocation_basis,
    (allocated_micros / 1000000.0)::DECIMAL(18, 6) AS allocated_cost_usd
FROM largest_remainder_micros(spread)  -- sql/macros/largest_remainder.sql
ORDER BY usage_date, key_name, model;
COMMIT;
