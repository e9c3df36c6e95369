-- pack/restatements: changes the query service made to days of the month.
-- Grain: usage_date x key_name x pull (quota_restatements). Inputs: quota_restatements.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT usage_date, key_name, previous_cost_usd, new_cost_usd, previous_pulled_at, pulled_at
FROM quota_restatements
WHERE usage_date BETWEEN $first AND $last
ORDER BY usage_date, key_name, pulled_at
