-- pack/by_key: the month's chargeback per key, with the teams that owned it.
-- Grain: key_name. Inputs: chargeback_monthly.
-- Parameters: $first (the month's first day, as the monthly marts name a month).
SELECT key_name, string_agg(DISTINCT team, ', ' ORDER BY team) AS teams, sum(requests)::BIGINT AS reported_requests,
       sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd, sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM chargeback_monthly
WHERE month = $first
GROUP BY key_name
ORDER BY reported_cost_usd DESC, key_name
