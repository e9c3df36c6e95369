-- previews/rejects_by_reason: rejected lines per source and reason code.
-- Grain: source x reason. Inputs: rejects.
-- Parameters: none.
SELECT source, reason, count(*) FROM rejects GROUP BY ALL ORDER BY ALL
