-- cli/restatements: the query service's changes to days of the window, latest first.
-- Grain: usage_date x key_name x pull (quota_restatements). Inputs: quota_restatements.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT usage_date, key_name, previous_cost_usd, new_cost_usd, pulled_at
FROM quota_restatements WHERE usage_date BETWEEN $first AND $last
ORDER BY pulled_at DESC, usage_date, key_name
