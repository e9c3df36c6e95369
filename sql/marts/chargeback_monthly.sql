-- chargeback_monthly: what each team's keys cost per month, for chargebacks.
-- Grain: month x team x key_name. Input: recon_key_daily (team as owned on each day, so a key
-- reassigned mid-month is split between its teams). Parameters: $start, $end: months rebuilt whole.
CREATE TABLE IF NOT EXISTS chargeback_monthly (
    month DATE NOT NULL,
    team VARCHAR NOT NULL,
    key_name VARCHAR NOT NULL,
    requests BIGINT NOT NULL,
    reported_cost_usd DECIMAL(18, 6) NOT NULL,
    estimated_cost_usd DOUBLE NOT NULL,
    billed_cost_usd DECIMAL(18, 6)
);
COMMENT ON TABLE chargeback_monthly IS 'Reported and estimated spend per month, team and key, for chargebacks';
COMMENT ON COLUMN chargeback_monthly.requests IS 'requests CometAPI reported';
COMMENT ON COLUMN chargeback_monthly.reported_cost_usd IS 'what CometAPI reported: the amount to charge back';
COMMENT ON COLUMN chargeback_monthly.estimated_cost_usd IS 'what the team''s logs explain';
COMMENT ON COLUMN chargeback_monthly.month IS 'first day of the month (reporting days)';
COMMENT ON COLUMN chargeback_monthly.team IS 'owner of the key on each day (key_owners), else unassigned';
COMMENT ON COLUMN chargeback_monthly.key_name IS 'key display name';
COMMENT ON COLUMN chargeback_monthly.billed_cost_usd IS 'what CometAPI''s ledger billed (NULL where it does not cover the days)';

BEGIN TRANSACTION;
DELETE FROM chargeback_monthly WHERE month BETWEEN date_trunc('month', $start::DATE) AND date_trunc('month', $end::DATE);
INSERT INTO chargeback_monthly
SELECT
    date_trunc('month', usage_date)::DATE AS month, team, key_name,
    sum(reported_requests)::BIGINT, sum(reported_cost_usd)::DECIMAL(18, 6), sum(estimated_cost_usd),
    sum(billed_cost_usd)::DECIMAL(18, 6)
FROM recon_key_daily
WHERE date_trunc('month', usage_date) BETWEEN date_trunc('month', $start::DATE) AND date_trunc('month', $end::DATE)
GROUP BY ALL
ORDER BY ALL;
COMMIT;
