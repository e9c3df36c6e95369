-- previews/budget_status: each budget in its current period, for the UI.
-- Grain: budget_id (current periods). Inputs: budget_status.
-- Parameters: none.
SELECT budget_id, period_start, as_of, amount_usd, spend_usd, spent_pct, round(forecast_usd, 6) AS forecast_usd,
       forecast_pct, crossed_pct, status
FROM budget_status WHERE is_current ORDER BY budget_id
