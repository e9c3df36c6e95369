-- previews/recon_statuses: key-days per reconciliation status over the run's window, for the UI.
-- Grain: status. Inputs: recon_key_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT status, count(*) AS key_days, sum(reported_cost_usd) AS reported_usd, round(sum(variance_usd), 6) AS variance_usd
FROM recon_key_daily
WHERE usage_date BETWEEN $start AND $end GROUP BY ALL ORDER BY ALL
