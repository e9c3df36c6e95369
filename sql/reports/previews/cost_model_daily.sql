-- previews/cost_model_daily: the first model-days of the run's window, for the UI.
-- Grain: usage_date x model (20 at most). Inputs: cost_model_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, model, billing_category, requests, allocated_cost_usd, round(estimated_cost_usd, 6) AS estimated_cost_usd
FROM cost_model_daily
WHERE usage_date BETWEEN $start AND $end ORDER BY usage_date, model LIMIT 20
