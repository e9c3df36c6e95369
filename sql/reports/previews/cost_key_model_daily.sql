-- previews/cost_key_model_daily: the first allocations of the run's window, for the UI.
-- Grain: usage_date x key_name x model (20 at most). Inputs: cost_key_model_daily.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, key_name, model, allocation_basis, allocated_cost_usd
FROM cost_key_model_daily WHERE usage_date BETWEEN $start AND $end
ORDER BY usage_date, key_name, model LIMIT 20
