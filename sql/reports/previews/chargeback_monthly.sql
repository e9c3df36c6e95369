-- previews/chargeback_monthly: the first chargeback rows (all months, as the row count), for the UI.
-- Grain: month x team x key_name (20 at most). Inputs: chargeback_monthly.
-- Parameters: none.
SELECT month, team, key_name, requests, reported_cost_usd FROM chargeback_monthly
ORDER BY month, team, key_name LIMIT 20
