-- pack/by_category: the month's requests and costs per billing category.
-- Grain: billing_category (cost_category_monthly's month row). Inputs: cost_category_monthly.
-- Parameters: $first (the month's first day, as the monthly marts name a month).
SELECT billing_category, requests, estimated_cost_usd, allocated_cost_usd
FROM cost_category_monthly
WHERE month = $first
ORDER BY allocated_cost_usd DESC, billing_category NULLS LAST
