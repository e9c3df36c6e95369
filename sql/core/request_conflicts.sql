-- request_conflicts: copies of a request_id that disagree with the copy that landed.
-- Grain: one row per such copy. Inputs: stg_copy_ranks (ranked over every day, as for inbox_files),
-- lake/inbox_records ($conflict_record_files: at least the files holding a copy of an id that has
-- more than one; the inbox step passes only those). Full rebuild, with inbox_files.
--
-- A second copy of a request (the same file re-sent, a log shipped twice) is a duplicate and is not
-- counted again. A copy that names another key or another model, or, when both copies carry usage,
-- other token counts, is not the same request: the rule in stg_copy_ranks still decides which copy
-- lands, but the disagreement is kept here (and counted in inbox_files.conflicts) for a person to
-- settle, instead of passing as a plain duplicate. A copy without usage (an interrupted stream) beside
-- one with usage is the normal case the rule exists for, not a conflict.
CREATE OR REPLACE TABLE request_conflicts AS
WITH duplicated AS (
    SELECT DISTINCT request_id FROM stg_copy_ranks WHERE copy_rank > 1
),
copies AS (
    SELECT c.request_id, c.copy_rank, c.file_id, r.file, r.line_no, r.key_name, r.model, r.usage_status,
           r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.cache_write_tokens,
           r.reasoning_tokens
    FROM read_parquet($conflict_record_files, hive_partitioning = false, union_by_name = true) AS r
    JOIN stg_copy_ranks AS c ON c.file_id = r.file_id AND c.line_no = r.line_no
    WHERE c.request_id IN (SELECT request_id FROM duplicated)
),
compared AS (
    SELECT
        d.request_id, d.file_id, d.file, d.line_no, l.file AS landed_file, l.line_no AS landed_line,
        d.usage_status <> 'unknown' AND l.usage_status <> 'unknown' AS both_have_usage,
        d.key_name, l.key_name AS landed_key_name, d.model, l.model AS landed_model,
        [d.prompt_tokens, d.completion_tokens, d.total_tokens, d.cached_tokens, d.cache_write_tokens,
         d.reasoning_tokens] AS tokens,
        [l.prompt_tokens, l.completion_tokens, l.total_tokens, l.cached_tokens, l.cache_write_tokens,
         l.reasoning_tokens] AS landed_tokens
    FROM copies AS d
    JOIN copies AS l ON l.request_id = d.request_id AND l.copy_rank = 1
    WHERE d.copy_rank > 1
)
SELECT
    request_id, file_id, file, line_no, landed_file, landed_line,
    concat_ws('; ',
        CASE WHEN key_name <> landed_key_name THEN format('key_name {} here, {} landed', key_name, landed_key_name) END,
        CASE WHEN model <> landed_model THEN format('model {} here, {} landed', model, landed_model) END,
        CASE WHEN both_have_usage AND tokens IS DISTINCT FROM landed_tokens
             THEN format('tokens (prompt, completion, total, cached, cache write, reasoning) {} here, {} landed',
                         tokens, landed_tokens) END
    ) AS differs
FROM compared
WHERE key_name <> landed_key_name OR model <> landed_model
   OR (both_have_usage AND tokens IS DISTINCT FROM landed_tokens)
ORDER BY request_id, file, line_no;
COMMENT ON TABLE request_conflicts IS 'Client-log copies of one request_id that disagree with the copy that landed (another key, model or token counts): not the same request, to be settled by a person';
COMMENT ON COLUMN request_conflicts.request_id IS 'the request id the copies share';
COMMENT ON COLUMN request_conflicts.file_id IS 'the staged file version holding this copy';
COMMENT ON COLUMN request_conflicts.file IS 'inbox-relative file of this copy (counted as a duplicate there)';
COMMENT ON COLUMN request_conflicts.line_no IS '1-based line of this copy';
COMMENT ON COLUMN request_conflicts.landed_file IS 'file of the copy that landed in requests';
COMMENT ON COLUMN request_conflicts.landed_line IS 'line of the copy that landed';
COMMENT ON COLUMN request_conflicts.differs IS 'what differs: key_name, model, token counts (this copy first, the landed one second)';
