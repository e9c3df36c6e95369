-- previews/quota_totals: what the query service reported over the run's window (the asset's figures).
-- Grain: one row (the window). Inputs: quota_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT coalesce(sum(reported_cost_usd), 0), coalesce(sum(reported_requests), 0)
FROM quota_daily WHERE usage_date BETWEEN $start AND $end
