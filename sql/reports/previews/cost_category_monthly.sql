-- previews/cost_category_monthly: the first months and categories (all months, as the row count), for the UI.
-- Grain: month x billing_category (20 at most). Inputs: cost_category_monthly.
-- Parameters: none.
SELECT month, billing_category, requests, allocated_cost_usd, round(estimated_cost_usd, 6) AS estimated_cost_usd
FROM cost_category_monthly
ORDER BY month, billing_category LIMIT 20
