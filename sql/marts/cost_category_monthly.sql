-- cost_category_monthly: token-billed vs per-call spend per month.
-- Grain: month x billing_category (NULL: unknown category). Input: cost_key_model_daily.
-- Parameters: $start, $end: every month they touch is rebuilt whole.
CREATE TABLE IF NOT EXISTS cost_category_monthly (
    month DATE NOT NULL,
    billing_category VARCHAR,
    requests BIGINT NOT NULL,
    estimated_cost_usd DOUBLE,
    allocated_cost_usd DECIMAL(18, 6) NOT NULL
);
COMMENT ON TABLE cost_category_monthly IS 'Spend per month and billing category (token / per_call); allocated sums to what CometAPI reported';
COMMENT ON COLUMN cost_category_monthly.month IS 'first day of the month (reporting days)';
COMMENT ON COLUMN cost_category_monthly.billing_category IS 'token or per_call; NULL when unknown (unpriced and not in the ledger)';
COMMENT ON COLUMN cost_category_monthly.requests IS 'requests seen by your logs or the ledger';
COMMENT ON COLUMN cost_category_monthly.estimated_cost_usd IS 'sum of priced estimates';
COMMENT ON COLUMN cost_category_monthly.allocated_cost_usd IS 'share of reported spend (sums to the reported total exactly)';

BEGIN TRANSACTION;
DELETE FROM cost_category_monthly WHERE month BETWEEN date_trunc('month', $start::DATE) AND date_trunc('month', $end::DATE);
INSERT INTO cost_category_monthly
SELECT
    date_trunc('month', usage_date)::DATE AS month, billing_category,
    sum(requests)::BIGINT, sum(estimated_cost_usd), sum(allocated_cost_usd)::DECIMAL(18, 6)
FROM cost_key_model_daily
WHERE date_trunc('month', usage_date) BETWEEN date_trunc('month', $start::DATE) AND date_trunc('month', $end::DATE)
GROUP BY ALL
ORDER BY ALL;
COMMIT;
