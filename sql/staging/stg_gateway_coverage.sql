-- stg_gateway_coverage: the reporting days of the window that the gateway ledger covers: pull records
-- say that every UTC day holding a part of the day was pulled, even a day without rows.
-- Grain: usage_date. Input: lake/gateway_pulls ($gateway_pull_files: first_day..last_day are UTC days).
-- Parameters: $start, $end (reporting days); reporting_day_start from sql/staging/reporting_day.sql.
CREATE OR REPLACE TEMP TABLE stg_gateway_coverage AS
WITH pulled AS (
    SELECT DISTINCT covered.utc_date::DATE AS utc_date
    FROM read_parquet($gateway_pull_files, hive_partitioning = false, union_by_name = true) AS p,
        LATERAL (SELECT unnest(generate_series(p.first_day, p.last_day, INTERVAL 1 DAY)) AS utc_date) AS covered
),
days AS (
    SELECT d::DATE AS usage_date,
        CAST(timezone('UTC', reporting_day_start(d::DATE)) AS DATE) AS first_utc,
        CAST(timezone('UTC', reporting_day_start(d::DATE + 1) - INTERVAL 1 MICROSECOND) AS DATE) AS last_utc
    FROM generate_series($start::DATE, $end::DATE, INTERVAL 1 DAY) AS g(d)
)
SELECT usage_date
FROM days
WHERE NOT EXISTS (
    SELECT 1 FROM generate_series(first_utc, last_utc, INTERVAL 1 DAY) AS u(day)
    WHERE u.day::DATE NOT IN (SELECT utc_date FROM pulled)
);
