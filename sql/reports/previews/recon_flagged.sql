-- previews/recon_flagged: the run's flagged key-days (is_flagged), for the UI.
-- Grain: usage_date x key_name. Inputs: recon_key_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, key_name, status, reported_cost_usd, round(estimated_cost_usd, 6) AS estimated_cost_usd,
       round(variance_usd, 6) AS variance_usd, explanation
FROM recon_key_daily
WHERE usage_date BETWEEN $start AND $end AND is_flagged
ORDER BY usage_date, key_name
