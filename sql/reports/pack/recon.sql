-- pack/recon: the month's reconciliation, every column the pack shows or exports.
-- Grain: usage_date x key_name (recon_key_daily). Inputs: recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT usage_date, key_name, team, reported_cost_usd, reported_requests, estimated_cost_usd, logged_requests,
       is_partial_day,
       billed_cost_usd, gateway_requests, variance_usd, variance_pct, tolerance_usd, status, is_flagged, coverage_pct,
       unpriced_requests, unknown_usage_requests, gateway_only_requests, gateway_only_usd, client_only_requests,
       adjustments_usd, explanation
FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last
ORDER BY usage_date, key_name
