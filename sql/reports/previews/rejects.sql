-- previews/rejects: the first rejected lines, for the UI.
-- Grain: one rejected line (20 at most). Inputs: rejects.
-- Parameters: none.
SELECT source, file, line, reason FROM rejects
ORDER BY source, file, line LIMIT 20
