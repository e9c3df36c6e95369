-- previews/quota_daily: what the query service reported per key over the run's window, for the UI.
-- Grain: key_name. Inputs: quota_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT key_name, sum(reported_cost_usd) AS cost_usd, sum(reported_requests) AS requests
FROM quota_daily WHERE usage_date BETWEEN $start AND $end
GROUP BY ALL ORDER BY key_name
