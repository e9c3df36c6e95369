-- pack/inbox: the request-log files that hold requests of the month, and what became of their lines.
-- Grain: one row (the month's inbox files). Inputs: inbox_files.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT count(*) AS files, coalesce(sum(lines_read), 0)::BIGINT AS lines_read,
       coalesce(sum(accepted), 0)::BIGINT AS accepted, coalesce(sum(rejected), 0)::BIGINT AS rejected,
       coalesce(sum(duplicates), 0)::BIGINT AS duplicates, count(*) FILTER (WHERE NOT balanced) AS unbalanced_files
FROM inbox_files
WHERE first_usage_date <= $last AND last_usage_date >= $first
