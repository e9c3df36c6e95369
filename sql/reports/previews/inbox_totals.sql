-- previews/inbox_totals: every request-log file read, and what became of its lines (the asset's figures and its
-- balance check).
-- Grain: one row (all inbox files). Inputs: inbox_files.
-- Parameters: none.
SELECT count(*), coalesce(sum(lines_read), 0), coalesce(sum(accepted), 0), coalesce(sum(rejected), 0),
       coalesce(sum(duplicates), 0), coalesce(sum(conflicts), 0), count(*) FILTER (WHERE NOT balanced)
FROM inbox_files
