-- pack/logged_days: days of the month with requests in your logs or in the gateway ledger.
-- Grain: usage_date. Inputs: requests.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT DISTINCT usage_date FROM requests WHERE usage_date BETWEEN $first AND $last ORDER BY 1
