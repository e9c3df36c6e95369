-- cost_model_daily: what each model cost per reporting day, estimated and allocated.
-- Grain: usage_date x model. Input: cost_key_model_daily. Parameters: $start, $end.
-- allocated_cost_usd over all models of a day equals the day's reported total exactly.
-- is_partial_day: the day was not over when the row was built (sql/staging/reporting_day.sql).
CREATE TABLE IF NOT EXISTS cost_model_daily (
    usage_date DATE NOT NULL,
    is_partial_day BOOLEAN NOT NULL,
    model VARCHAR NOT NULL,
    billing_category VARCHAR,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cached_tokens BIGINT,
    reasoning_tokens BIGINT,
    estimated_cost_usd DOUBLE,
    allocated_cost_usd DECIMAL(18, 6) NOT NULL
);
COMMENT ON TABLE cost_model_daily IS 'Cost per model and reporting day: estimated from tokens and prices, and allocated from what CometAPI reported';
COMMENT ON COLUMN cost_model_daily.estimated_cost_usd IS 'sum of priced estimates; NULL when no request of the model is priced';
COMMENT ON COLUMN cost_model_daily.allocated_cost_usd IS 'share of reported spend (sums to the reported total exactly)';
COMMENT ON COLUMN cost_model_daily.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN cost_model_daily.model IS 'model as logged';
COMMENT ON COLUMN cost_model_daily.billing_category IS 'token or per_call (NULL: unknown)';
COMMENT ON COLUMN cost_model_daily.requests IS 'requests seen by your logs or the ledger';
COMMENT ON COLUMN cost_model_daily.prompt_tokens IS 'all input tokens (cache included)';
COMMENT ON COLUMN cost_model_daily.completion_tokens IS 'output tokens (reasoning included)';
COMMENT ON COLUMN cost_model_daily.cached_tokens IS 'cache-read input tokens';
COMMENT ON COLUMN cost_model_daily.reasoning_tokens IS 'reasoning tokens (client logs only)';
COMMENT ON COLUMN cost_model_daily.is_partial_day IS 'the reporting day was not over when the row was built (today or later): figures so far, rebuilt by the run after the day ends';

BEGIN TRANSACTION;
DELETE FROM cost_model_daily WHERE usage_date BETWEEN $start AND $end;
INSERT INTO cost_model_daily
SELECT
    usage_date, is_partial_day(usage_date), model, mode(billing_category), sum(requests)::BIGINT,
    sum(prompt_tokens)::BIGINT, sum(completion_tokens)::BIGINT, sum(cached_tokens)::BIGINT, sum(reasoning_tokens)::BIGINT,
    sum(estimated_cost_usd), sum(allocated_cost_usd)::DECIMAL(18, 6)
FROM cost_key_model_daily
WHERE usage_date BETWEEN $start AND $end
GROUP BY usage_date, model
ORDER BY usage_date, model;
COMMIT;
