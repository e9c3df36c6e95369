-- pack/per_call_models: the month's per-call models with the price per call they were priced at.
-- Grain: model x per_call_usd x gateway_ratio. Inputs: requests, prices.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT p.model, p.per_call_usd, p.gateway_ratio, count(*) AS requests, sum(r.estimated_cost_usd) AS estimated_cost_usd
FROM requests AS r
JOIN prices AS p USING (price_version_id)
WHERE r.usage_date BETWEEN $first AND $last AND p.billing_category = 'per_call'
GROUP BY ALL
ORDER BY p.model, p.per_call_usd
