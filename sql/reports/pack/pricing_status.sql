-- pack/pricing_status: the month's requests per pricing status.
-- Grain: pricing_status. Inputs: requests.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT pricing_status, count(*) AS requests
FROM requests
WHERE usage_date BETWEEN $first AND $last
GROUP BY pricing_status
ORDER BY pricing_status
