-- cli/inbox_totals: every request-log file the pipeline has read, and what became of its lines.
-- Grain: one row (all inbox files). Inputs: inbox_files. Parameters: none.
SELECT count(*), coalesce(sum(lines_read), 0), coalesce(sum(accepted), 0),
       coalesce(sum(rejected), 0), coalesce(sum(duplicates), 0)
FROM inbox_files
