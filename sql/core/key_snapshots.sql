-- key_snapshots: each key's remaining and used quota at the moment of each call.
-- Unlimited keys (-1 or 999999999 sentinels) have is_unlimited = true and NULL amounts.
-- Grain: call × key. Inputs: lake/key_snapshots, balance_snapshots (built from lake/balance_snapshots
-- just before: a snapshot counts once its balance row, written last, exists). Full rebuild.
CREATE OR REPLACE TABLE key_snapshots AS
SELECT
    k.fetched_at::TIMESTAMPTZ AS fetched_at,
    k.key_name,
    k.remain_quota_usd::DECIMAL(18, 6) AS remain_quota_usd,
    k.used_quota_usd::DECIMAL(18, 6) AS used_quota_usd,
    k.is_unlimited,
    k.snapshot_id
FROM read_parquet($key_snapshot_files, hive_partitioning = false, union_by_name = true) AS k
WHERE k.snapshot_id IN (SELECT snapshot_id FROM balance_snapshots)
ORDER BY k.fetched_at, k.snapshot_id, k.key_name;
COMMENT ON TABLE key_snapshots IS 'Per-key quota at the moment of each query-service call (point-in-time)';
COMMENT ON COLUMN key_snapshots.remain_quota_usd IS 'remaining quota in USD; NULL when unlimited';
COMMENT ON COLUMN key_snapshots.used_quota_usd IS 'used quota in USD; NULL when unlimited';
COMMENT ON COLUMN key_snapshots.is_unlimited IS 'true when the service reported an unlimited sentinel (-1 or 999999999)';
COMMENT ON COLUMN key_snapshots.fetched_at IS 'UTC time of the call';
COMMENT ON COLUMN key_snapshots.key_name IS 'key display name (keys[].name)';
COMMENT ON COLUMN key_snapshots.snapshot_id IS 'the call (shared with balance_snapshots)';
