-- previews/recon_key_daily: the first key-days of the run's window, for the UI.
-- Grain: usage_date x key_name (20 at most). Inputs: recon_key_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, key_name, status, is_flagged, reported_cost_usd, round(estimated_cost_usd, 6) AS estimated_cost_usd,
       billed_cost_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $start AND $end ORDER BY usage_date, key_name LIMIT 20
