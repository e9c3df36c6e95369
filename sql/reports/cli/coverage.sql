-- cli/coverage: estimated USD (your logs priced) as a percentage of reported USD over the window
-- (NULL when nothing was reported). Grain: one row (the window). Inputs: recon_key_daily.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT 100 * sum(estimated_cost_usd) / nullif(sum(reported_cost_usd), 0)
FROM recon_key_daily WHERE usage_date BETWEEN $first AND $last
