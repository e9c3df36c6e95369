-- stg_quota_pulls: every query-service pull, typed, with the days it covered.
-- Grain: one row per pull × covered day. Input: lake/quota_pulls ($quota_pulls_files).
-- A pull record is written after its day files, so only recorded pulls count.
CREATE OR REPLACE TEMP TABLE stg_quota_pulls AS
SELECT
    pull_id,
    pulled_at::TIMESTAMPTZ AS pulled_at,
    covered.usage_date::DATE AS usage_date
FROM read_parquet($quota_pulls_files, hive_partitioning = false, union_by_name = true) AS p,
    LATERAL (SELECT unnest(generate_series(p.kept_start, p.kept_end, INTERVAL 1 DAY)) AS usage_date) AS covered;
