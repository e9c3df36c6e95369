-- pack/by_day: the month's reconciliation per reporting day, with its flagged key-days.
-- Grain: usage_date. Inputs: recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT usage_date, sum(reported_cost_usd)::DECIMAL(18, 6) AS reported_cost_usd,
       sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd, sum(variance_usd) AS variance_usd,
       sum(reported_requests)::BIGINT AS reported_requests, sum(logged_requests)::BIGINT AS logged_requests,
       count(*) FILTER (WHERE is_flagged) AS flagged_key_days
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY usage_date
ORDER BY usage_date
