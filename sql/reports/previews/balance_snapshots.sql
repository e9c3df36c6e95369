-- previews/balance_snapshots: the latest balance snapshots, for the UI.
-- Grain: one snapshot (10 at most). Inputs: balance_snapshots.
-- Parameters: none.
SELECT fetched_at, username, balance_usd, total_used_usd, request_count
FROM balance_snapshots ORDER BY fetched_at DESC LIMIT 10
