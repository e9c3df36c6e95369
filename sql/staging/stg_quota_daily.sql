-- stg_quota_daily: what each pull reported per day and key, typed and renamed to the contract.
-- Grain: pull × usage_date × key_name. Inputs: lake/quota_daily ($quota_daily_files, the window's
-- partitions) and stg_quota_pulls. Parameters: $start, $end (reporting days, inclusive).
CREATE OR REPLACE TEMP TABLE stg_quota_daily AS
SELECT
    d.usage_date::DATE AS usage_date,
    d.key_name,
    d.cost_usd::DECIMAL(18, 6) AS reported_cost_usd,
    d.requests::BIGINT AS reported_requests,
    d.pull_id,
    p.pulled_at
FROM read_parquet($quota_daily_files, hive_partitioning = false, union_by_name = true) AS d
JOIN stg_quota_pulls AS p
    ON p.pull_id = d.pull_id AND p.usage_date = d.usage_date
WHERE d.usage_date BETWEEN $start AND $end;
