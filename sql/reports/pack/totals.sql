-- pack/totals: the month's headline figures: reported (query service), estimated, billed, variance,
-- key-days and flagged key-days (is_flagged), and the reported USD of the key-days not flagged.
-- Grain: one row (the month). Inputs: quota_daily, recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT
    (SELECT coalesce(sum(reported_cost_usd), 0)::DECIMAL(18, 6)
     FROM quota_daily WHERE usage_date BETWEEN $first AND $last) AS reported_cost_usd,
    (SELECT coalesce(sum(reported_requests), 0)::BIGINT FROM quota_daily WHERE usage_date BETWEEN $first AND $last)
        AS reported_requests,
    (SELECT count(*) FROM quota_daily WHERE usage_date BETWEEN $first AND $last) AS reported_key_days,
    coalesce(sum(estimated_cost_usd), 0) AS estimated_cost_usd,
    sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd,
    coalesce(sum(variance_usd), 0) AS variance_usd,
    coalesce(sum(logged_requests), 0)::BIGINT AS logged_requests,
    sum(gateway_requests)::BIGINT AS gateway_requests,
    count(*) AS key_days,
    count(*) FILTER (WHERE is_flagged) AS flagged_key_days,
    count(*) FILTER (WHERE status <> 'matched') AS not_matched_key_days,
    coalesce(sum(reported_cost_usd) FILTER (WHERE NOT is_flagged), 0)::DECIMAL(18, 6) AS reconciled_reported_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
