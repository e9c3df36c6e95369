-- previews/budgets: the budgets as loaded, for the UI.
-- Grain: budget_id x effective_from. Inputs: budgets.
-- Parameters: none.
SELECT budget_id, amount_usd, thresholds_pct, effective_from, effective_to
FROM budgets ORDER BY budget_id, effective_from
