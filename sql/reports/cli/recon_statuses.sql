-- cli/recon_statuses: key-days per reconciliation status over the window, with reported and estimated USD.
-- Grain: status. Inputs: recon_key_daily.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT status, count(*), sum(reported_cost_usd), sum(estimated_cost_usd)
FROM recon_key_daily WHERE usage_date BETWEEN $first AND $last
GROUP BY ALL ORDER BY count(*) DESC, status
