-- previews/quota_restatements: the latest changes to days of the run's window, for the UI.
-- Grain: usage_date x key_name x pull (20 at most). Inputs: quota_restatements.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, key_name, previous_cost_usd, new_cost_usd, pulled_at
FROM quota_restatements WHERE usage_date BETWEEN $start AND $end
ORDER BY pulled_at DESC LIMIT 20
