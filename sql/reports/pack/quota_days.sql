-- pack/quota_days: days of the month the query service has figures for.
-- Grain: usage_date. Inputs: quota_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT DISTINCT usage_date FROM quota_daily WHERE usage_date BETWEEN $first AND $last ORDER BY 1
