-- inbox_files: every current inbox file with its line accounting:
-- lines_read = accepted + rejected + duplicates (blank lines are counted apart, not as read);
-- conflicts (a part of duplicates) are copies that disagree with the copy that landed.
-- Grain: one row per inbox-relative path. Inputs: stg_inbox_files, stg_copy_ranks (ranked over
-- all days), request_conflicts (built first). Full rebuild; first/last_usage_date are reporting days
-- (reporting_day, sql/staging/reporting_day.sql).
CREATE OR REPLACE TABLE inbox_files AS
WITH copies AS (
    SELECT file_id, count(*) FILTER (WHERE copy_rank = 1) AS accepted, count(*) FILTER (WHERE copy_rank > 1) AS duplicates,
        reporting_day(min(ts)) AS first_usage_date, reporting_day(max(ts)) AS last_usage_date
    FROM stg_copy_ranks
    GROUP BY file_id
),
conflicting AS (
    SELECT file_id, count(*) AS conflicts FROM request_conflicts GROUP BY file_id
)
SELECT
    f.file,
    f.file_id,
    f.content_sha256,
    f.size_bytes,
    f.staged_at,
    f.lines_read,
    f.blank_lines,
    coalesce(c.accepted, 0)::BIGINT AS accepted,
    f.rejected,
    coalesce(c.duplicates, 0)::BIGINT AS duplicates,
    coalesce(x.conflicts, 0)::BIGINT AS conflicts,
    f.damaged,
    c.first_usage_date,
    c.last_usage_date,
    f.lines_read = coalesce(c.accepted, 0) + f.rejected + coalesce(c.duplicates, 0) AS balanced
FROM stg_inbox_files AS f
LEFT JOIN copies AS c USING (file_id)
LEFT JOIN conflicting AS x USING (file_id)
ORDER BY f.file;
COMMENT ON TABLE inbox_files IS 'Client request-log files in the inbox (current version of each) and what became of every line';
COMMENT ON COLUMN inbox_files.file IS 'path relative to COMET_LEDGER_INBOX';
COMMENT ON COLUMN inbox_files.content_sha256 IS 'SHA-256 of the file bytes; an unchanged file is never read twice';
COMMENT ON COLUMN inbox_files.lines_read IS 'non-blank lines (a corrupt gzip stream counts as one more, rejected)';
COMMENT ON COLUMN inbox_files.accepted IS 'lines whose request landed from this file';
COMMENT ON COLUMN inbox_files.rejected IS 'lines rejected (see rejects)';
COMMENT ON COLUMN inbox_files.duplicates IS 'lines whose request_id landed from another copy';
COMMENT ON COLUMN inbox_files.conflicts IS 'duplicates that disagree with the copy that landed (another key, model or token counts): see request_conflicts';
COMMENT ON COLUMN inbox_files.damaged IS 'the file has a corrupt gzip stream; its copies lose every tie';
COMMENT ON COLUMN inbox_files.balanced IS 'lines_read = accepted + rejected + duplicates';
COMMENT ON COLUMN inbox_files.file_id IS 'the staged version (path and content)';
COMMENT ON COLUMN inbox_files.size_bytes IS 'file size';
COMMENT ON COLUMN inbox_files.staged_at IS 'UTC time the version was read';
COMMENT ON COLUMN inbox_files.blank_lines IS 'blank lines (skipped, not counted as read)';
COMMENT ON COLUMN inbox_files.first_usage_date IS 'first reporting day among its requests';
COMMENT ON COLUMN inbox_files.last_usage_date IS 'last reporting day among its requests';
