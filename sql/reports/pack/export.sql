-- pack/export: the query service's figures for the month, as the pack's export CSV lists them.
-- Grain: one quota_daily row (usage_date x key_name x pull_id), with the key-day's team (recon_key_daily,
-- else 'unassigned'). Inputs: quota_daily, recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT q.usage_date, q.key_name, coalesce(r.team, 'unassigned') AS team,
       q.reported_cost_usd, q.reported_requests, q.pulled_at, q.pull_id
FROM quota_daily AS q
LEFT JOIN recon_key_daily AS r USING (usage_date, key_name)
WHERE q.usage_date BETWEEN $first AND $last
ORDER BY q.usage_date, q.key_name, q.pull_id
