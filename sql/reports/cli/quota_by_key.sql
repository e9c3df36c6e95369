-- cli/quota_by_key: what the query service reported per key over the window, as `comet-ledger` prints it.
-- Grain: key_name. Inputs: quota_daily.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT key_name, count(*) AS days, sum(reported_cost_usd) AS cost, sum(reported_requests) AS requests
FROM quota_daily WHERE usage_date BETWEEN $first AND $last
GROUP BY key_name ORDER BY key_name
