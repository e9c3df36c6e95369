-- pack/pulled_days: days of the month some recorded query-service pull covered (a day without usage
-- counts too), read from the lake's record of pulls, not from the warehouse.
-- Grain: day. Inputs: lake/quota_pulls (the Parquet files in $files).
-- Parameters: $files (the quota_pulls files), $first, $last (the month's first and last reporting days).
SELECT DISTINCT d::DATE AS day
FROM read_parquet($files, hive_partitioning = false, union_by_name = true) AS p,
     LATERAL (SELECT unnest(generate_series(p.kept_start, p.kept_end, INTERVAL 1 DAY)) AS d)
WHERE d::DATE BETWEEN $first AND $last
ORDER BY day
