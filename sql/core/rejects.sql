-- rejects: every unusable input line or ledger row, with where it was and why.
-- Grain: one row per rejected line (client logs) or ledger row (gateway), and one per inbox entry
-- that was not read at all (source inbox_file: a link out of the inbox, a name that is not UTF-8).
-- Inputs: lake/inbox_rejects ($inbox_reject_files, current file versions only via stg_inbox_files),
-- lake/inbox_skipped ($inbox_skipped_files: the latest run's listing) and lake/gateway_rejects
-- ($gateway_reject_files; a row rejected by several pulls is listed once). Full rebuild.
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
ORDER BY source, file, line, reason;
COMMENT ON TABLE rejects IS 'Input that could not be used: client request-log lines, gateway ledger rows, and inbox entries that were not read at all';
COMMENT ON COLUMN rejects.source IS 'client_log, gateway_api, gateway_csv, or inbox_file (an inbox entry not read at all)';
COMMENT ON COLUMN rejects.file IS 'inbox-relative file (client logs, CSV exports); NULL for API rows';
COMMENT ON COLUMN rejects.line IS '1-based line number in the file; NULL for API rows and inbox_file rows';
COMMENT ON COLUMN rejects.reason IS 'reason code from a fixed vocabulary (see README)';
COMMENT ON COLUMN rejects.detail IS 'what was wrong, for a person';
COMMENT ON COLUMN rejects.raw IS 'the rejected text, truncated to 2,000 characters, every configured secret and anything credential-shaped masked; NULL for inbox_file rows';
