-- previews/key_snapshots: the latest per-key snapshots, for the UI.
-- Grain: fetched_at x key_name (20 at most). Inputs: key_snapshots.
-- Parameters: none.
SELECT fetched_at, key_name, remain_quota_usd, used_quota_usd, is_unlimited
FROM key_snapshots ORDER BY fetched_at DESC, key_name LIMIT 20
