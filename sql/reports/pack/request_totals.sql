-- pack/request_totals: the month's requests by pricing status and by the side that saw them.
-- Grain: one row (the month). Inputs: requests.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT
    count(*) AS requests,
    count(*) FILTER (WHERE pricing_status = 'priced') AS priced_requests,
    count(*) FILTER (WHERE pricing_status = 'unpriced') AS unpriced_requests,
    count(*) FILTER (WHERE seen_in = 'gateway') AS gateway_only_requests,
    count(*) FILTER (WHERE seen_in = 'client') AS client_only_requests
FROM requests
WHERE usage_date BETWEEN $first AND $last
