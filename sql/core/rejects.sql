-- rejects: every unusable input line or ledger row, with where it was and why.
-- Grain: one row per rejected line (client logs) or ledger row (gateway), and one per inbox entry
-- that was not read at all (source inbox_file: a link out of the inbox, a name that is not UTF-8).
-- Inputs: lake/inbox_rejects ($inbox_reject_files, current file versions only via stg_inbox_files),
-- lake/inbox_skipped ($inbox_skipped_files: the latest run's listing) and lake/gateway_rejects
-- ($gateway_reject_files; a row rejected by several pulls is listed once), lake/catalog_rejects
-- ($catalog_reject_files: /api/models entries with a missing, negative, absurd or mistyped price,
-- pipelines/lib/prices/catalog.py) and, from lake/gateway_logs ($gateway_all_log_files), the consume rows
-- whose `other` (the ratios applied) could not be read whole: the row is billed and kept, but makes
-- no price version (source gateway_ratios, reason bad_ratio). Full rebuild.
CREATE OR REPLACE TABLE rejects AS
SELECT r.source, r.file, r.line, r.reason, r.detail, r.raw
FROM read_parquet($inbox_reject_files, hive_partitioning = false, union_by_name = true) AS r
JOIN stg_inbox_files AS f USING (file_id)
UNION ALL
SELECT source, file, line, reason, detail, raw
FROM read_parquet($inbox_skipped_files, hive_partitioning = false, union_by_name = true)
UNION ALL
SELECT DISTINCT source, file, line, reason, detail, raw
FROM read_parquet($gateway_reject_files, hive_partitioning = false, union_by_name = true)
UNION ALL
SELECT source, file, line, reason, detail, raw
FROM read_parquet($catalog_reject_files, hive_partitioning = false, union_by_name = true)
UNION ALL
SELECT DISTINCT 'gateway_ratios' AS source, NULL AS file, NULL AS line, 'bad_ratio' AS reason,
    printf('ledger row %s (%s, %s): a ratio in `other` has the wrong type or `other` is not a JSON object; '
           || 'billed as logged, not used as a price', request_id, coalesce(model, 'no model'),
           strftime(created_at, '%Y-%m-%d %H:%M:%S UTC')) AS detail,
    NULL AS raw
FROM read_parquet($gateway_all_log_files, hive_partitioning = false, union_by_name = true)
WHERE other_parse_error AND log_type = 2
ORDER BY source, file, line, reason;
COMMENT ON TABLE rejects IS 'Input that could not be used: client request-log lines, gateway ledger rows, and inbox entries that were not read at all';
COMMENT ON COLUMN rejects.source IS 'client_log, gateway_api, gateway_csv, inbox_file (an inbox entry not read at all), catalog (an /api/models entry) or gateway_ratios (a ledger row whose ratios are unreadable: kept as billed, no price made from it)';
COMMENT ON COLUMN rejects.file IS 'inbox-relative file (client logs, CSV exports); NULL for API rows';
COMMENT ON COLUMN rejects.line IS '1-based line number in the file; NULL for API rows and inbox_file rows';
COMMENT ON COLUMN rejects.reason IS 'reason code from a fixed vocabulary (see README)';
COMMENT ON COLUMN rejects.detail IS 'what was wrong, for a person';
COMMENT ON COLUMN rejects.raw IS 'the rejected text, truncated to 2,000 characters, every configured secret and anything credential-shaped masked; NULL for inbox_file rows';
