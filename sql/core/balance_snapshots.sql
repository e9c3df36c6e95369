-- balance_snapshots: the account's balance, lifetime spend and request count at the moment of each
-- call. Point-in-time: a snapshot exists only for moments a call was made; none is back-dated.
-- Grain: one row per call. Input: lake/balance_snapshots ($balance_snapshot_files). Full rebuild.
CREATE OR REPLACE TABLE balance_snapshots AS
SELECT
    fetched_at::TIMESTAMPTZ AS fetched_at,
    username,
    balance_usd::DECIMAL(18, 6) AS balance_usd,
    total_used_usd::DECIMAL(18, 6) AS total_used_usd,
    request_count::BIGINT AS request_count,
    snapshot_id
FROM read_parquet($balance_snapshot_files, hive_partitioning = false, union_by_name = true)
ORDER BY fetched_at, snapshot_id;
COMMENT ON TABLE balance_snapshots IS 'Account balance at the moment of each query-service call (point-in-time, never back-dated)';
COMMENT ON COLUMN balance_snapshots.balance_usd IS 'current remaining balance in USD (the service''s total_quota)';
COMMENT ON COLUMN balance_snapshots.total_used_usd IS 'lifetime spend in USD (total_used_quota)';
COMMENT ON COLUMN balance_snapshots.request_count IS 'lifetime request count over all keys';
COMMENT ON COLUMN balance_snapshots.fetched_at IS 'UTC time of the call';
COMMENT ON COLUMN balance_snapshots.username IS 'account user name';
COMMENT ON COLUMN balance_snapshots.snapshot_id IS 'the call (shared with key_snapshots)';
