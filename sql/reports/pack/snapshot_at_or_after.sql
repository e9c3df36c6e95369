-- pack/snapshot_at_or_after: the closest balance snapshot at or after an instant; none is ever
-- back-dated or interpolated. Grain: one snapshot (at most one row). Inputs: balance_snapshots.
-- Parameters: $at (an instant, UTC: the month's start for the opening balance, its end for the closing one).
SELECT fetched_at, username, balance_usd, total_used_usd, request_count, snapshot_id
FROM balance_snapshots
WHERE fetched_at >= $at
ORDER BY fetched_at, snapshot_id
LIMIT 1
