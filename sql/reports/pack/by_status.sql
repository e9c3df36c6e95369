-- pack/by_status: the month's key-days per reconciliation status, flagged statuses last.
-- Grain: status. Inputs: recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT status, count(*) AS key_days, sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd,
       sum(estimated_cost_usd) AS estimated_cost_usd, sum(variance_usd) AS variance_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY status
ORDER BY bool_or(is_flagged), status <> 'matched', status
