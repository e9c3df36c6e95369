-- previews/request_conflicts: the first request ids logged twice with different content, for the run's log.
-- Grain: request_id x file x line_no (20 at most). Inputs: request_conflicts.
-- Parameters: none.
SELECT request_id, file, line_no, landed_file || ':' || landed_line, differs
FROM request_conflicts ORDER BY request_id, file, line_no LIMIT 20
