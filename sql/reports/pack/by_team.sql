-- pack/by_team: the month's chargeback per team, with the keys it owned.
-- Grain: team. Inputs: chargeback_monthly.
-- Parameters: $first (the month's first day, as the monthly marts name a month).
SELECT team, string_agg(DISTINCT key_name, ', ' ORDER BY key_name) AS keys, sum(requests)::BIGINT AS reported_requests,
       sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd, sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM chargeback_monthly
WHERE month = $first
GROUP BY team
ORDER BY reported_cost_usd DESC, team
