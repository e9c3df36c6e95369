-- pack/unpriced_models: models the price table has no version for on the day of a request.
-- Grain: model. Inputs: requests. Parameters: $first, $last (the month's first and last reporting days).
SELECT model, count(*) AS requests, string_agg(DISTINCT key_name, ', ' ORDER BY key_name) AS keys,
       sum(billed_cost_usd)::DECIMAL(18, 6) AS billed_cost_usd
FROM requests
WHERE usage_date BETWEEN $first AND $last AND pricing_status = 'unpriced'
GROUP BY model
ORDER BY model
