-- stg_request_log_lines: the fast path of request-log normalisation (pipelines/lib/request_logs/engine.py).
--
-- Input: `request_log_lines(line_no BIGINT, line VARCHAR, fallback_key VARCHAR)`: one row per inbox line (valid
-- UTF-8, its '\n' included; line_no is any unique row id), with the file's key folder (NULL in the inbox root), and `request_log_tz_hours(hour BIGINT, offset_s INTEGER)`: the reporting zone's UTC
-- offset for every UTC hour (epoch_s // 3600) in which that offset does not change, computed by Python's
-- zoneinfo (so usage_date uses the same tz database as normalize.py, not ICU's).
-- Parameters: $max_ts_us (BIGINT: `now` + 1 day
-- in epoch microseconds), $ws (VARCHAR: every character for which Python's str.isspace() is true).
--
-- Output: one row per line whose outcome this statement can PROVE to equal normalize.parse_line's, with every
-- column of RECORD_SCHEMA (ts as a UTC TIMESTAMP). A line that is not returned goes to parse_line itself:
-- every reject (their details are Python's own messages), and every line with anything DuckDB's JSON reader
-- treats differently from Python's json module or that this statement does not model exactly:
--   * grammar DuckDB accepts and Python rejects: NaN/Infinity literals, trailing commas, integer literals
--     longer than 4300 digits, nesting deeper than Python's recursion limit (bounded by counting brackets);
--   * duplicate keys in any object that is read (yyjson keeps the first, Python the last);
--   * numbers that are not plain integer literals where a count, status, latency or unix time is read,
--     ISO timestamps outside the common `YYYY-MM-DD[T ]HH:MM:SS[.ffffff](Z|+HH:MM)` form;
--   * raw_usage_json that json.dumps would spell differently (non-ASCII, escapes, floats, arrays);
--   * a body without `object`/`type` that has `choices`, endpoints with non-ASCII text in the task test,
--     bodies that cannot be proven to be objects, and hours in which the reporting zone changes offset.
-- The fast path's conditions are each a sufficient condition for parse_line's result; the equivalence tests
-- (tests/lib/test_request_log_engine.py) check both engines line by line.
WITH parsed AS MATERIALIZED (
    SELECT
        line_no,
        line,
        fallback_key,
        json_extract(line, [
            '$.request_id', '$.ts', '$.key_name', '$.model',                                           -- 1-4
            '$.endpoint', '$.status', '$.source_ip', '$.latency_ms',                                   -- 5-8
            '$.response.object', '$.response.type', '$.response.id', '$.response.model',               -- 9-12
            '$.response.created', '$.response.created_at', '$.response.usage', '$.response.error',     -- 13-16
            '$.response.task_id', '$.response.data.task_id', '$.response.result', '$.response.code',   -- 17-20
            '$.response.response.id', '$.response.response.model', '$.response.response.created',      -- 21-23
            '$.response.response.created_at', '$.response.response.usage',                             -- 24-25
            '$.response.message.id', '$.response.message.model', '$.response.message.created',          -- 26-28
            '$.response.message.created_at', '$.response.message.usage'                                -- 29-30
        ])::VARCHAR[] AS e
    FROM request_log_lines
    WHERE json_valid(line)
      -- Python's json rejects trailing commas and NaN/Infinity, yyjson accepts them (cheap gate, exact test).
      AND NOT (
          (contains(line, ',}') OR contains(line, ',]') OR contains(line, ' }') OR contains(line, ' ]')
           OR contains(line, chr(9)) OR contains(line, chr(13)))
          AND regexp_matches(line, ',[ \t\r\n]*[\]}]'))
      AND NOT (
          (line ILIKE '%nan%' OR line ILIKE '%inf%')
          AND regexp_matches(line, '(?i)[:,\[][ \t\r\n]*[-+]?(nan|inf)'))
      -- Python's int() refuses more than 4300 digits (runs of 1000 go to Python); its json recursion stops near
      -- 1000 levels.
      AND (strlen(line) <= 4300 OR NOT regexp_matches(line, '[0-9]{1000}'))
      AND (strlen(line) <= 1000
           OR strlen(line) - strlen(replace(replace(line, '{', ''), '[', '')) <= 500)
),

-- Each read value as its JSON text: NULL = absent, 'null', '"...', '{...', '[...', true/false or a number
-- (yyjson prints a non-integer number with '.', 'e' or 'E'; an integer as its plain digits).
shaped AS (
    SELECT
        *,
        -- the usage shape; NULL = not decidable here
        CASE
            WHEN e[9] IS NULL AND e[10] IS NULL AND e[11] IS NULL AND e[12] IS NULL
                 AND e[13] IS NULL AND e[14] IS NULL AND e[15] IS NULL AND e[16] IS NULL
                 AND e[17] IS NULL AND e[18] IS NULL AND e[19] IS NULL AND e[20] IS NULL
                THEN NULL  -- the body is not provably an object
            WHEN e[9] = '"chat.completion"' THEN 'chat_completion'
            WHEN e[9] = '"chat.completion.chunk"' THEN 'chat_completion_chunk'
            WHEN e[9] = '"response"' THEN 'response'
            WHEN e[10] = '"response.completed"' THEN 'response_completed'
            WHEN e[10] = '"message"' THEN 'anthropic_message'
            WHEN e[10] = '"message_start"' THEN 'anthropic_message_start'
            WHEN e[10] = '"message_delta"' THEN 'anthropic_message_delta'
            WHEN (e[9] IS NULL OR e[9] = 'null') AND json_exists(line, '$.response.choices') THEN NULL
            WHEN e[16] IS NOT NULL AND e[16] NOT IN ('null', 'false', '""', '{}', '[]')
                 AND (e[16][1] IN ('{', '[', '"') OR e[16] = 'true')
                 AND e[6] IS NOT NULL AND e[6] <> 'null' AND e[6] >= '400' AND strlen(e[6]) = 3
                THEN 'error'
            WHEN e[16] IS NOT NULL AND e[16] NOT IN ('null', 'false', '""', '{}', '[]')
                 AND e[6] IS NOT NULL AND e[6] <> 'null' AND e[6] >= '400' AND strlen(e[6]) = 3
                THEN NULL  -- a truthy error of another kind: Python's truth test decides
            WHEN e[5] IS NOT NULL AND e[5][1] = '"' AND strlen(e[5]) <> length(e[5]) THEN NULL
            WHEN e[17] IS NOT NULL OR e[18] IS NOT NULL OR (e[19] IS NOT NULL AND e[20] IS NOT NULL)
                THEN 'task'
            WHEN ep_path IS NOT NULL AND list_has_any(string_split(lower(ep_path), '/'),
                    ['mj', 'suno', 'kling', 'runway', 'runwayml', 'luma', 'pika', 'videos', 'images'])
                THEN 'task'
            ELSE NULL  -- unknown_shape (or the error test above with an odd status): Python's reject
        END AS shape
    FROM (
        SELECT
            *,
            -- normalize._is_task's path: before any '?', after the first '://'
            CASE WHEN strpos(ep_part, '://') > 0 THEN substr(ep_part, strpos(ep_part, '://') + 3)
                 ELSE ep_part END AS ep_path
        FROM (
            SELECT *, split_part(CASE WHEN e[5][1] = '"' THEN json_extract_string(e[5], '$') END, '?', 1) AS ep_part
            FROM parsed
        )
    )
),

carried AS (
    SELECT
        line_no,
        line,
        fallback_key,
        e,
        shape,
        -- the object whose id / model / created / usage belong to the request
        CASE shape WHEN 'response_completed' THEN e[21] WHEN 'anthropic_message_start' THEN e[26] ELSE e[11] END AS c_id,
        CASE shape WHEN 'response_completed' THEN e[22] WHEN 'anthropic_message_start' THEN e[27] ELSE e[12] END AS c_model,
        CASE shape WHEN 'response_completed' THEN e[23] WHEN 'anthropic_message_start' THEN e[28] ELSE e[13] END AS c_created,
        CASE shape WHEN 'response_completed' THEN e[24] WHEN 'anthropic_message_start' THEN e[29] ELSE e[14] END AS c_created_at,
        CASE shape WHEN 'response_completed' THEN e[25] WHEN 'anthropic_message_start' THEN e[30]
                   WHEN 'anthropic_message_delta' THEN e[15] ELSE e[15] END AS u,
        CASE WHEN shape = 'task' THEN json_extract(line, '$.response.data')::VARCHAR END AS task_data
    FROM shaped
    WHERE shape IS NOT NULL
      -- a carried object must provably be an object (a body's is, once its shape is known)
      AND CASE shape WHEN 'response_completed' THEN e[21] IS NOT NULL OR e[22] IS NOT NULL OR e[23] IS NOT NULL
                                                    OR e[24] IS NOT NULL OR e[25] IS NOT NULL
                     WHEN 'anthropic_message_start' THEN e[26] IS NOT NULL OR e[27] IS NOT NULL
                                                    OR e[28] IS NOT NULL OR e[29] IS NOT NULL OR e[30] IS NOT NULL
                     ELSE true END
      -- envelope texts must be absent, null or strings (else Python's bad_field_type)
      AND (e[1] IS NULL OR e[1] = 'null' OR e[1][1] = '"') AND (e[3] IS NULL OR e[3] = 'null' OR e[3][1] = '"') AND (e[4] IS NULL OR e[4] = 'null' OR e[4][1] = '"')
      AND (e[5] IS NULL OR e[5] = 'null' OR e[5][1] = '"') AND (e[7] IS NULL OR e[7] = 'null' OR e[7][1] = '"')
),

fields AS (
    SELECT
        line_no,
        line,
        fallback_key,
        shape,
        -- absent, null or blank strings are NULL (blank = Python's str.strip() leaves nothing)
        CASE WHEN ascii(CASE WHEN e[1][1] = '"' THEN CASE WHEN contains(e[1], '\') THEN json_extract_string(e[1], '$') ELSE e[1][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[1][1] = '"' THEN CASE WHEN contains(e[1], '\') THEN json_extract_string(e[1], '$') ELSE e[1][2:-2] END END, $ws) <> '' THEN CASE WHEN e[1][1] = '"' THEN CASE WHEN contains(e[1], '\') THEN json_extract_string(e[1], '$') ELSE e[1][2:-2] END END END AS env_request_id,
        CASE WHEN ascii(CASE WHEN e[3][1] = '"' THEN CASE WHEN contains(e[3], '\') THEN json_extract_string(e[3], '$') ELSE e[3][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[3][1] = '"' THEN CASE WHEN contains(e[3], '\') THEN json_extract_string(e[3], '$') ELSE e[3][2:-2] END END, $ws) <> '' THEN CASE WHEN e[3][1] = '"' THEN CASE WHEN contains(e[3], '\') THEN json_extract_string(e[3], '$') ELSE e[3][2:-2] END END END AS env_key_name,
        CASE WHEN ascii(CASE WHEN e[4][1] = '"' THEN CASE WHEN contains(e[4], '\') THEN json_extract_string(e[4], '$') ELSE e[4][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[4][1] = '"' THEN CASE WHEN contains(e[4], '\') THEN json_extract_string(e[4], '$') ELSE e[4][2:-2] END END, $ws) <> '' THEN CASE WHEN e[4][1] = '"' THEN CASE WHEN contains(e[4], '\') THEN json_extract_string(e[4], '$') ELSE e[4][2:-2] END END END AS env_model,
        CASE WHEN ascii(CASE WHEN e[5][1] = '"' THEN CASE WHEN contains(e[5], '\') THEN json_extract_string(e[5], '$') ELSE e[5][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[5][1] = '"' THEN CASE WHEN contains(e[5], '\') THEN json_extract_string(e[5], '$') ELSE e[5][2:-2] END END, $ws) <> '' THEN CASE WHEN e[5][1] = '"' THEN CASE WHEN contains(e[5], '\') THEN json_extract_string(e[5], '$') ELSE e[5][2:-2] END END END AS endpoint,
        CASE WHEN ascii(CASE WHEN e[7][1] = '"' THEN CASE WHEN contains(e[7], '\') THEN json_extract_string(e[7], '$') ELSE e[7][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[7][1] = '"' THEN CASE WHEN contains(e[7], '\') THEN json_extract_string(e[7], '$') ELSE e[7][2:-2] END END, $ws) <> '' THEN CASE WHEN e[7][1] = '"' THEN CASE WHEN contains(e[7], '\') THEN json_extract_string(e[7], '$') ELSE e[7][2:-2] END END END AS source_ip,
        CASE WHEN ascii(CASE WHEN c_model[1] = '"' THEN CASE WHEN contains(c_model, '\') THEN json_extract_string(c_model, '$') ELSE c_model[2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN c_model[1] = '"' THEN CASE WHEN contains(c_model, '\') THEN json_extract_string(c_model, '$') ELSE c_model[2:-2] END END, $ws) <> '' THEN CASE WHEN c_model[1] = '"' THEN CASE WHEN contains(c_model, '\') THEN json_extract_string(c_model, '$') ELSE c_model[2:-2] END END END AS body_model,
        -- the body id: none for a message_delta; a task's first usable candidate (task_id, data.task_id,
        -- result, id, data as a string); else the carried object's id. Integers count as their digits.
        CASE WHEN shape = 'anthropic_message_delta' THEN NULL
             WHEN shape = 'task' THEN coalesce(
                 CASE WHEN e[17][1] = '"' THEN CASE WHEN ascii(CASE WHEN e[17][1] = '"' THEN CASE WHEN contains(e[17], '\') THEN json_extract_string(e[17], '$') ELSE e[17][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[17][1] = '"' THEN CASE WHEN contains(e[17], '\') THEN json_extract_string(e[17], '$') ELSE e[17][2:-2] END END, $ws) <> '' THEN CASE WHEN e[17][1] = '"' THEN CASE WHEN contains(e[17], '\') THEN json_extract_string(e[17], '$') ELSE e[17][2:-2] END END END
             WHEN e[17][1] = '-' OR e[17][1] BETWEEN '0' AND '9' THEN
                  CASE WHEN NOT contains(e[17], '.') AND NOT contains(e[17], 'e') AND NOT contains(e[17], 'E') THEN e[17] END END,
                 CASE WHEN e[18][1] = '"' THEN CASE WHEN ascii(CASE WHEN e[18][1] = '"' THEN CASE WHEN contains(e[18], '\') THEN json_extract_string(e[18], '$') ELSE e[18][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[18][1] = '"' THEN CASE WHEN contains(e[18], '\') THEN json_extract_string(e[18], '$') ELSE e[18][2:-2] END END, $ws) <> '' THEN CASE WHEN e[18][1] = '"' THEN CASE WHEN contains(e[18], '\') THEN json_extract_string(e[18], '$') ELSE e[18][2:-2] END END END
             WHEN e[18][1] = '-' OR e[18][1] BETWEEN '0' AND '9' THEN
                  CASE WHEN NOT contains(e[18], '.') AND NOT contains(e[18], 'e') AND NOT contains(e[18], 'E') THEN e[18] END END,
                 CASE WHEN e[19][1] = '"' THEN CASE WHEN ascii(CASE WHEN e[19][1] = '"' THEN CASE WHEN contains(e[19], '\') THEN json_extract_string(e[19], '$') ELSE e[19][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[19][1] = '"' THEN CASE WHEN contains(e[19], '\') THEN json_extract_string(e[19], '$') ELSE e[19][2:-2] END END, $ws) <> '' THEN CASE WHEN e[19][1] = '"' THEN CASE WHEN contains(e[19], '\') THEN json_extract_string(e[19], '$') ELSE e[19][2:-2] END END END
             WHEN e[19][1] = '-' OR e[19][1] BETWEEN '0' AND '9' THEN
                  CASE WHEN NOT contains(e[19], '.') AND NOT contains(e[19], 'e') AND NOT contains(e[19], 'E') THEN e[19] END END,
                 CASE WHEN e[11][1] = '"' THEN CASE WHEN ascii(CASE WHEN e[11][1] = '"' THEN CASE WHEN contains(e[11], '\') THEN json_extract_string(e[11], '$') ELSE e[11][2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN e[11][1] = '"' THEN CASE WHEN contains(e[11], '\') THEN json_extract_string(e[11], '$') ELSE e[11][2:-2] END END, $ws) <> '' THEN CASE WHEN e[11][1] = '"' THEN CASE WHEN contains(e[11], '\') THEN json_extract_string(e[11], '$') ELSE e[11][2:-2] END END END
             WHEN e[11][1] = '-' OR e[11][1] BETWEEN '0' AND '9' THEN
                  CASE WHEN NOT contains(e[11], '.') AND NOT contains(e[11], 'e') AND NOT contains(e[11], 'E') THEN e[11] END END,
                 CASE WHEN task_data[1] = '"' THEN
                     CASE WHEN ascii(json_extract_string(task_data, '$')) BETWEEN 33 AND 126
                               OR trim(json_extract_string(task_data, '$'), $ws) <> ''
                          THEN json_extract_string(task_data, '$') END END)
             ELSE CASE WHEN c_id[1] = '"' THEN CASE WHEN ascii(CASE WHEN c_id[1] = '"' THEN CASE WHEN contains(c_id, '\') THEN json_extract_string(c_id, '$') ELSE c_id[2:-2] END END) BETWEEN 33 AND 126 OR trim(CASE WHEN c_id[1] = '"' THEN CASE WHEN contains(c_id, '\') THEN json_extract_string(c_id, '$') ELSE c_id[2:-2] END END, $ws) <> '' THEN CASE WHEN c_id[1] = '"' THEN CASE WHEN contains(c_id, '\') THEN json_extract_string(c_id, '$') ELSE c_id[2:-2] END END END
             WHEN c_id[1] = '-' OR c_id[1] BETWEEN '0' AND '9' THEN
                  CASE WHEN NOT contains(c_id, '.') AND NOT contains(c_id, 'e') AND NOT contains(c_id, 'E') THEN c_id END END
        END AS response_id,
        -- the timestamp's source: the envelope's ts, else the carried created / created_at
        CASE WHEN e[2] IS NOT NULL AND e[2] <> 'null' THEN e[2]
             WHEN c_created IS NOT NULL AND c_created <> 'null' THEN c_created
             WHEN c_created_at IS NOT NULL AND c_created_at <> 'null' THEN c_created_at END AS ts_text,
        e[6] AS status_text,
        e[8] AS latency_text,
        CASE WHEN u IS NULL OR u = 'null' THEN NULL ELSE u END AS usage_text
    FROM carried
),

identified AS (
    SELECT
        line_no,
        line,
        shape,
        endpoint,
        source_ip,
        response_id,
        usage_text,
        coalesce(env_request_id, response_id) AS request_id,
        coalesce(env_key_name, nullif(fallback_key, '')) AS key_name,
        coalesce(env_model, body_model) AS model,
        -- status: an integer 100..599; latency_ms: a non-negative integer (floats go to Python)
        CASE WHEN status_text IS NULL OR status_text = 'null' THEN NULL
             ELSE CAST(status_text AS INTEGER) END AS status,
        CASE WHEN latency_text IS NULL OR latency_text = 'null' THEN NULL
             ELSE CAST(latency_text AS BIGINT) END AS latency_ms,
        -- ts: unix seconds as a plain integer, or `YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}](Z|+HH:MM)`
        CASE
            WHEN TRY_CAST(ts_text AS UBIGINT) < 100000000000
                 AND CAST(TRY_CAST(ts_text AS UBIGINT) AS VARCHAR) = ts_text THEN CAST(ts_text AS BIGINT) * 1000000
            WHEN ts_text[1] = '"' AND ts_text[2:5] BETWEEN '1900' AND '8999' AND regexp_full_match(ts_text,
                '"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"')
                THEN epoch_us(TRY_CAST(ts_text[2:-2] AS TIMESTAMPTZ))
        END AS ts_us
    FROM fields
    WHERE (status_text IS NULL OR status_text = 'null' OR (strlen(status_text) = 3 AND status_text BETWEEN '100' AND '599'
                                                          AND TRY_CAST(status_text AS INTEGER) IS NOT NULL))
      AND (latency_text IS NULL OR latency_text = 'null'
           OR (TRY_CAST(latency_text AS UBIGINT) < 9007199254740992
               AND CAST(TRY_CAST(latency_text AS UBIGINT) AS VARCHAR) = latency_text))
),

usage_read AS MATERIALIZED (
    SELECT
        *,
        CASE WHEN usage_text IS NOT NULL THEN json_extract(usage_text, [
            '$.prompt_tokens', '$.completion_tokens', '$.total_tokens',                                  -- 1-3
            '$.prompt_tokens_details', '$.prompt_tokens_details.cached_tokens',                          -- 4-5
            '$.prompt_tokens_details.cached_creation_tokens', '$.prompt_cache_hit_tokens',               -- 6-7
            '$.completion_tokens_details', '$.completion_tokens_details.reasoning_tokens',               -- 8-9
            '$.input_tokens', '$.output_tokens', '$.input_tokens_details',                               -- 10-12
            '$.input_tokens_details.cached_tokens', '$.input_tokens_details.cached_creation_tokens',     -- 13-14
            '$.output_tokens_details', '$.output_tokens_details.reasoning_tokens',                       -- 15-16
            '$.cache_creation_input_tokens', '$.cache_read_input_tokens'                                 -- 17-18
        ])::VARCHAR[] END AS ut
    FROM identified
    WHERE request_id IS NOT NULL AND key_name IS NOT NULL AND model IS NOT NULL
      AND ts_us IS NOT NULL AND ts_us <= $max_ts_us
      -- usage: absent/null, or an object that json.dumps spells exactly as yyjson does: ASCII, no escapes,
      -- no floats, no arrays (nested objects are limited to the four *_details below)
      AND (usage_text IS NULL
           OR (usage_text[1] = '{' AND strlen(usage_text) = length(usage_text)
               AND NOT contains(usage_text, '\') AND NOT contains(usage_text, '.')
               AND NOT contains(usage_text, '[') AND NOT regexp_matches(usage_text, '[0-9][eE]')))
),

counted AS (
    SELECT
        *,
        -- strict counts: NULL = absent or null; -1 = anything but a plain integer literal below 2**53
        CASE WHEN ut[1] IS NULL OR ut[1] = 'null' THEN NULL
             WHEN TRY_CAST(ut[1] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[1] AS UBIGINT) AS VARCHAR) = ut[1] THEN CAST(ut[1] AS BIGINT)
             ELSE -1 END AS n1,
        CASE WHEN ut[2] IS NULL OR ut[2] = 'null' THEN NULL
             WHEN TRY_CAST(ut[2] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[2] AS UBIGINT) AS VARCHAR) = ut[2] THEN CAST(ut[2] AS BIGINT)
             ELSE -1 END AS n2,
        CASE WHEN ut[3] IS NULL OR ut[3] = 'null' THEN NULL
             WHEN TRY_CAST(ut[3] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[3] AS UBIGINT) AS VARCHAR) = ut[3] THEN CAST(ut[3] AS BIGINT)
             ELSE -1 END AS n3,
        CASE WHEN ut[5] IS NULL OR ut[5] = 'null' THEN NULL
             WHEN TRY_CAST(ut[5] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[5] AS UBIGINT) AS VARCHAR) = ut[5] THEN CAST(ut[5] AS BIGINT)
             ELSE -1 END AS n5,
        CASE WHEN ut[6] IS NULL OR ut[6] = 'null' THEN NULL
             WHEN TRY_CAST(ut[6] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[6] AS UBIGINT) AS VARCHAR) = ut[6] THEN CAST(ut[6] AS BIGINT)
             ELSE -1 END AS n6,
        CASE WHEN ut[7] IS NULL OR ut[7] = 'null' THEN NULL
             WHEN TRY_CAST(ut[7] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[7] AS UBIGINT) AS VARCHAR) = ut[7] THEN CAST(ut[7] AS BIGINT)
             ELSE -1 END AS n7,
        CASE WHEN ut[9] IS NULL OR ut[9] = 'null' THEN NULL
             WHEN TRY_CAST(ut[9] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[9] AS UBIGINT) AS VARCHAR) = ut[9] THEN CAST(ut[9] AS BIGINT)
             ELSE -1 END AS n9,
        CASE WHEN ut[10] IS NULL OR ut[10] = 'null' THEN NULL
             WHEN TRY_CAST(ut[10] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[10] AS UBIGINT) AS VARCHAR) = ut[10] THEN CAST(ut[10] AS BIGINT)
             ELSE -1 END AS n10,
        CASE WHEN ut[11] IS NULL OR ut[11] = 'null' THEN NULL
             WHEN TRY_CAST(ut[11] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[11] AS UBIGINT) AS VARCHAR) = ut[11] THEN CAST(ut[11] AS BIGINT)
             ELSE -1 END AS n11,
        CASE WHEN ut[13] IS NULL OR ut[13] = 'null' THEN NULL
             WHEN TRY_CAST(ut[13] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[13] AS UBIGINT) AS VARCHAR) = ut[13] THEN CAST(ut[13] AS BIGINT)
             ELSE -1 END AS n13,
        CASE WHEN ut[14] IS NULL OR ut[14] = 'null' THEN NULL
             WHEN TRY_CAST(ut[14] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[14] AS UBIGINT) AS VARCHAR) = ut[14] THEN CAST(ut[14] AS BIGINT)
             ELSE -1 END AS n14,
        CASE WHEN ut[16] IS NULL OR ut[16] = 'null' THEN NULL
             WHEN TRY_CAST(ut[16] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[16] AS UBIGINT) AS VARCHAR) = ut[16] THEN CAST(ut[16] AS BIGINT)
             ELSE -1 END AS n16,
        CASE WHEN ut[17] IS NULL OR ut[17] = 'null' THEN NULL
             WHEN TRY_CAST(ut[17] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[17] AS UBIGINT) AS VARCHAR) = ut[17] THEN CAST(ut[17] AS BIGINT)
             ELSE -1 END AS n17,
        CASE WHEN ut[18] IS NULL OR ut[18] = 'null' THEN NULL
             WHEN TRY_CAST(ut[18] AS UBIGINT) < 9007199254740992
                  AND CAST(TRY_CAST(ut[18] AS UBIGINT) AS VARCHAR) = ut[18] THEN CAST(ut[18] AS BIGINT)
             ELSE -1 END AS n18,
        -- objects in the usage text: itself plus its object-valued *_details (no other nesting)
        strlen(usage_text) - strlen(replace(usage_text, '{', '')) AS usage_objects,
        1 + coalesce(ut[4][1] = '{', false)::INTEGER + coalesce(ut[8][1] = '{', false)::INTEGER
          + coalesce(ut[12][1] = '{', false)::INTEGER + coalesce(ut[15][1] = '{', false)::INTEGER AS known_objects
    FROM usage_read
    WHERE
      -- a *_details value must be absent, null or an object (else Python's bad_field_type)
      (ut[4] IS NULL OR ut[4] = 'null' OR ut[4][1] = '{') AND (ut[8] IS NULL OR ut[8] = 'null' OR ut[8][1] = '{')
      AND (ut[12] IS NULL OR ut[12] = 'null' OR ut[12][1] = '{') AND (ut[15] IS NULL OR ut[15] = 'null' OR ut[15][1] = '{')
),

tokens AS (
    SELECT
        *,
        CASE
            WHEN shape = 'task' THEN 'per_call'
            WHEN shape IN ('error', 'anthropic_message_start') OR usage_text IS NULL THEN 'unknown'
            WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN
                CASE WHEN n1 IS NULL OR n2 IS NULL THEN 'unknown' ELSE 'known' END
            ELSE CASE WHEN n10 IS NULL OR n11 IS NULL THEN 'unknown' ELSE 'known' END
        END AS usage_status,
        -- prompt, completion, total (as given), cached, cache_write, reasoning: as each shape reads them
        CASE WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN n1
             WHEN shape IN ('response', 'response_completed') THEN n10
             ELSE n10 + coalesce(n17, 0) + coalesce(n18, 0) END AS p,
        CASE WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN n2 ELSE n11 END AS c,
        n3 AS t,
        CASE WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN coalesce(n5, n7, 0)
             WHEN shape IN ('response', 'response_completed') THEN coalesce(n13, 0)
             ELSE coalesce(n18, 0) END AS cr,
        CASE WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN coalesce(n6, 0)
             WHEN shape IN ('response', 'response_completed') THEN coalesce(n14, 0)
             ELSE coalesce(n17, 0) END AS cw,
        CASE WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN coalesce(n9, 0)
             WHEN shape IN ('response', 'response_completed') THEN coalesce(n16, 0)
             ELSE 0 END AS r,
        -- every count the shape consults is absent, null or valid (task/error/message_start consult none)
        CASE WHEN shape IN ('task', 'error', 'anthropic_message_start') OR usage_text IS NULL THEN true
             WHEN shape IN ('chat_completion', 'chat_completion_chunk') THEN
                 least(n1, n2, n3, n5, n6, n9, CASE WHEN n5 IS NULL THEN n7 END, 0) >= 0
             WHEN shape IN ('response', 'response_completed') THEN
                 least(n10, n11, n3, n13, n14, n16, 0) >= 0
             ELSE least(n10, n11, n17, n18, n3, 0) >= 0
        END AS counts_ok
    FROM counted
    WHERE usage_text IS NULL OR usage_objects = known_objects
),

keyed AS MATERIALIZED (
    SELECT
        *,
        json_keys(line, ['$', '$.response', '$.response.response', '$.response.message', '$.response.data'])
            AS object_keys,
        CASE WHEN usage_text IS NOT NULL THEN json_keys(usage_text, ['$', '$.prompt_tokens_details',
            '$.completion_tokens_details', '$.input_tokens_details', '$.output_tokens_details']) END AS usage_keys
    FROM tokens
    WHERE counts_ok
      -- a known usage must be consistent (total, cache subsets, reasoning subset), else Python rejects it
      AND (usage_status <> 'known' OR ((t IS NULL OR t = p + c) AND cr + cw <= p AND r <= c))
),

checked AS (
    SELECT
        *,
        -- duplicate keys in any object read (yyjson keeps the first copy, Python the last); the usage
        -- text's nesting is limited above, so usage_keys covers all of its objects
        len(object_keys[1]) = list_unique(object_keys[1])
            AND coalesce(len(object_keys[2]) = list_unique(object_keys[2]), true)
            AND coalesce(len(object_keys[3]) = list_unique(object_keys[3]), true)
            AND coalesce(len(object_keys[4]) = list_unique(object_keys[4]), true)
            AND coalesce(len(object_keys[5]) = list_unique(object_keys[5]), true) AS no_duplicate_keys
    FROM keyed
),

final AS (
    SELECT *
    FROM checked
    WHERE no_duplicate_keys
      AND (usage_text IS NULL OR (len(usage_keys[1]) = list_unique(usage_keys[1])
                                  AND coalesce(len(usage_keys[2]) = list_unique(usage_keys[2]), true)
                                  AND coalesce(len(usage_keys[3]) = list_unique(usage_keys[3]), true)
                                  AND coalesce(len(usage_keys[4]) = list_unique(usage_keys[4]), true)
                                  AND coalesce(len(usage_keys[5]) = list_unique(usage_keys[5]), true)))
)

SELECT
    line_no,
    request_id,
    make_timestamp(ts_us) AS ts,
    DATE '1970-01-01' + CAST((ts_us + CAST(h.offset_s AS BIGINT) * 1000000) // 86400000000 AS INTEGER) AS usage_date,
    key_name,
    model,
    endpoint,
    status,
    source_ip,
    latency_ms,
    shape AS usage_shape,
    usage_status,
    CASE WHEN usage_status = 'known' THEN p END AS prompt_tokens,
    CASE WHEN usage_status = 'known' THEN c END AS completion_tokens,
    CASE WHEN usage_status = 'known' THEN p + c END AS total_tokens,
    CASE WHEN usage_status = 'known' THEN cr END AS cached_tokens,
    CASE WHEN usage_status = 'known' THEN cw END AS cache_write_tokens,
    CASE WHEN usage_status = 'known' THEN r END AS reasoning_tokens,
    CASE WHEN usage_status = 'known' THEN p - cr - cw END AS uncached_prompt_tokens,
    response_id,
    usage_text AS raw_usage_json
FROM final
JOIN request_log_tz_hours AS h ON h.hour = ts_us // 3600000000
ORDER BY line_no
