-- stg_gateway_coverage: the days of the window that the gateway ledger covers: a pull record
-- says so, even for a day without rows. Grain: usage_date. Input: lake/gateway_pulls
-- ($gateway_pull_files). Parameters: $start, $end.
CREATE OR REPLACE TEMP TABLE stg_gateway_coverage AS
SELECT DISTINCT covered.usage_date::DATE AS usage_date
FROM read_parquet($gateway_pull_files, hive_partitioning = false, union_by_name = true) AS p,
    LATERAL (SELECT unnest(generate_series(p.first_day, p.last_day, INTERVAL 1 DAY)) AS usage_date) AS covered
WHERE covered.usage_date::DATE BETWEEN $start AND $end;
