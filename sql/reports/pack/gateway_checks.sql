-- pack/gateway_checks: what the latest gateway-ledger pull of each UTC day found (the ledger is pulled
-- by UTC day), read from the lake, not from the warehouse.
-- Grain: utc_date x check_name (of the latest pull of the day). Inputs: lake/gateway_checks (the Parquet
-- files in $files). Parameters: $files, $first, $last (the UTC days covering the month's reporting days).
SELECT utc_date, check_name, status, ledger_units, server_units, detail, api_method, pulled_at
FROM read_parquet($files, hive_partitioning = false, union_by_name = true)
WHERE utc_date BETWEEN $first AND $last
QUALIFY pulled_at = max(pulled_at) OVER (PARTITION BY utc_date)
ORDER BY utc_date, check_name
