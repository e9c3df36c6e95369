-- previews/inbox_files: the first inbox files, for the UI.
-- Grain: one inbox file (20 at most). Inputs: inbox_files.
-- Parameters: none.
SELECT file, lines_read, accepted, rejected, duplicates, balanced
FROM inbox_files ORDER BY file LIMIT 20
