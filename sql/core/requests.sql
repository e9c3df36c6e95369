-- requests: every request either side saw, priced with the version in force on its reporting day.
-- Grain: one request (request_id). Inputs: stg_client_requests, stg_gateway_rows (consume rows that
-- are not corrections), prices, key_owners. Parameters: $start, $end: the window rebuilt.
--
-- Storage: the one table that grows with every request is kept out of warehouse.duckdb (see
-- pipelines/lib/warehouse/__init__.py). This model builds the window's rows into the temporary table
-- requests_window; `warehouse.replace_days` then writes one Parquet file per reporting day and
-- recreates the view `requests` over every day's current file (its comments: requests_view.sql).
--
-- seen_in: 'both', 'client' (your logs only) or 'gateway' (billed, not in your logs). Client and
-- ledger rows match on request_id; a ledger row without one (before 2026-02) on the response id.
-- Tokens come from your logs when they hold them (estimate_basis 'client_tokens'), else from the
-- gateway ledger ('gateway_tokens'); per-call models are priced per call ('per_call').
-- Model -> price: the version in force on the day from the first source that has one (config, then
-- ledger, then catalog: prices.sql); within a source an exact price row, else the model without one
-- trailing snapshot suffix (-YYYY-MM-DD or -YYYYMMDD); else unpriced. price_source says which.
-- The estimate is never 0 for want of a price:
-- pricing_status says why it is NULL (unpriced, unknown_usage, missing_price).
-- task_id: the id the gateway answered a task submit with (your logs only), which ties the ledger's
-- later refund or correction of the task to it (ledger_task_adjustments).
-- The splits and server-tool counts (cache_write_1h_tokens, audio/image_prompt_tokens,
-- web_search/fetch_requests) come from client logs only, NULL when not reported: an unreported
-- kind is priced as the classic buckets price it (1-hour writes as cache writes, audio and image
-- as input); a reported one needs its own price, else the estimate is NULL (missing_price).
CREATE OR REPLACE TEMP TABLE requests_window (
    request_id VARCHAR NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    usage_date DATE NOT NULL,
    key_name VARCHAR,
    team VARCHAR NOT NULL,
    model VARCHAR,
    logged_model VARCHAR,
    priced_model VARCHAR,
    billing_category VARCHAR,
    usage_status VARCHAR,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    total_tokens BIGINT,
    cached_tokens BIGINT,
    cache_write_tokens BIGINT,
    reasoning_tokens BIGINT,
    cache_write_5m_tokens BIGINT,
    cache_write_1h_tokens BIGINT,
    audio_prompt_tokens BIGINT,
    image_prompt_tokens BIGINT,
    web_search_requests BIGINT,
    web_fetch_requests BIGINT,
    estimate_basis VARCHAR,
    estimated_cost_usd DOUBLE,
    billed_cost_usd DECIMAL(18, 6),
    price_version_id VARCHAR,
    price_source VARCHAR,
    pricing_status VARCHAR NOT NULL,
    seen_in VARCHAR NOT NULL,
    source_ip VARCHAR,
    task_id VARCHAR
);

INSERT INTO requests_window
WITH gateway_calls AS (
    SELECT * FROM stg_gateway_rows WHERE is_request
),
-- A ledger row without a request id (logged before CometAPI kept them) is matched by the provider's
-- response id, the `id` your application received, when it carries one.
by_response AS (
    SELECT g.request_id AS gateway_id, c.request_id AS client_id
    FROM gateway_calls AS g
    JOIN stg_client_requests AS c ON c.response_id = g.response_id
    WHERE NOT g.has_request_id AND g.response_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY c.request_id ORDER BY g.request_id) = 1
        AND row_number() OVER (PARTITION BY g.request_id ORDER BY c.request_id) = 1
),
gateway AS (
    SELECT g.*, coalesce(r.client_id, g.request_id) AS match_id
    FROM gateway_calls AS g
    LEFT JOIN by_response AS r ON r.gateway_id = g.request_id
),
joined AS (
    SELECT
        coalesce(c.request_id, g.request_id) AS request_id,
        coalesce(c.ts, g.created_at) AS ts,
        coalesce(c.usage_date, g.usage_date) AS usage_date,
        coalesce(c.key_name, g.key_name) AS key_name,
        coalesce(g.model, c.model) AS model,
        c.model AS logged_model,
        CASE WHEN c.request_id IS NOT NULL AND g.request_id IS NOT NULL THEN 'both'
             WHEN c.request_id IS NOT NULL THEN 'client' ELSE 'gateway' END AS seen_in,
        c.usage_status,
        c.usage_status = 'known' AS client_has_tokens,
        g.request_id IS NOT NULL AND g.prompt_tokens IS NOT NULL AS gateway_has_tokens,
        c.prompt_tokens AS c_prompt, c.completion_tokens AS c_completion, c.cached_tokens AS c_cached,
        c.cache_write_tokens AS c_cache_write, c.reasoning_tokens AS c_reasoning,
        c.cache_write_5m_tokens AS c_cache_write_5m, c.cache_write_1h_tokens AS c_cache_write_1h,
        c.audio_prompt_tokens AS c_audio, c.image_prompt_tokens AS c_image,
        c.web_search_requests AS c_web_search, c.web_fetch_requests AS c_web_fetch,
        g.prompt_tokens AS g_prompt, g.completion_tokens AS g_completion, g.cached_tokens AS g_cached,
        g.cache_write_tokens AS g_cache_write,
        g.billed_usd AS billed_cost_usd,
        g.billing_category AS gateway_category,
        coalesce(c.source_ip, g.source_ip) AS source_ip,
        c.task_id
    FROM stg_client_requests AS c
    FULL OUTER JOIN gateway AS g ON g.match_id = c.request_id
),
tokens AS (
    SELECT
        *,
        CASE WHEN client_has_tokens THEN c_prompt WHEN gateway_has_tokens THEN g_prompt END AS prompt_tokens,
        CASE WHEN client_has_tokens THEN c_completion WHEN gateway_has_tokens THEN g_completion END AS completion_tokens,
        CASE WHEN client_has_tokens THEN c_cached WHEN gateway_has_tokens THEN g_cached END AS cached_tokens,
        CASE WHEN client_has_tokens THEN c_cache_write WHEN gateway_has_tokens THEN g_cache_write END AS cache_write_tokens,
        CASE WHEN client_has_tokens THEN c_reasoning END AS reasoning_tokens,
        CASE WHEN client_has_tokens THEN c_cache_write_5m END AS cache_write_5m_tokens,
        CASE WHEN client_has_tokens THEN c_cache_write_1h END AS cache_write_1h_tokens,
        CASE WHEN client_has_tokens THEN c_audio END AS audio_prompt_tokens,
        CASE WHEN client_has_tokens THEN c_image END AS image_prompt_tokens,
        CASE WHEN client_has_tokens THEN c_web_search END AS web_search_requests,
        CASE WHEN client_has_tokens THEN c_web_fetch END AS web_fetch_requests,
        CASE WHEN client_has_tokens THEN 'client_tokens' WHEN gateway_has_tokens THEN 'gateway_tokens' END AS token_basis,
        regexp_replace(model, '-(\d{4}-\d{2}-\d{2}|\d{8})$', '') AS base_model
    FROM joined
),
-- the price version of each (model, day): the first source in precedence order (config, ledger,
-- catalog: sql/core/prices.sql) with a version in force; within a source the exact model name before
-- the name without its snapshot suffix. Chosen once per model and day, not per request.
model_days AS (
    SELECT DISTINCT model, base_model, usage_date FROM tokens WHERE model IS NOT NULL
),
chosen AS (
    SELECT d.model AS request_model, d.usage_date AS request_day, p.*
    FROM model_days AS d
    JOIN prices AS p
        ON (p.model = d.model OR p.model = d.base_model)
       AND p.effective_from <= d.usage_date
       AND (p.effective_to IS NULL OR d.usage_date < p.effective_to)
    QUALIFY row_number() OVER (
        PARTITION BY d.model, d.usage_date
        ORDER BY CASE p.source WHEN 'config' THEN 1 WHEN 'ledger' THEN 2 ELSE 3 END, p.model = d.model DESC) = 1
),
priced AS (
    SELECT t.*, p.model AS priced_model, p.price_version_id, p.source AS price_source,
        p.billing_category AS price_category,
        p.input_usd_per_mtok::DOUBLE AS input_price, p.output_usd_per_mtok::DOUBLE AS output_price,
        p.cache_read_usd_per_mtok::DOUBLE AS cache_read_price, p.cache_write_usd_per_mtok::DOUBLE AS cache_write_price,
        p.cache_write_1h_usd_per_mtok::DOUBLE AS cache_write_1h_price,
        p.audio_input_usd_per_mtok::DOUBLE AS audio_price, p.image_input_usd_per_mtok::DOUBLE AS image_price,
        p.web_search_usd_per_request::DOUBLE AS web_search_price, p.web_fetch_usd_per_request::DOUBLE AS web_fetch_price,
        p.per_call_usd::DOUBLE AS per_call_price, p.gateway_ratio::DOUBLE AS ratio
    FROM tokens AS t
    LEFT JOIN chosen AS p ON p.request_model = t.model AND p.request_day = t.usage_date
),
costed AS (
    SELECT
        *,
        CASE
            WHEN price_category = 'per_call' THEN per_call_price * ratio
            WHEN price_category = 'token' THEN (
                -- the uncached prompt, less the audio and image tokens priced at their own price
                (prompt_tokens - cached_tokens - cache_write_tokens
                    - coalesce(audio_prompt_tokens, 0) - coalesce(image_prompt_tokens, 0)) * input_price
                + CASE WHEN audio_prompt_tokens > 0 THEN audio_prompt_tokens * audio_price ELSE 0 END
                + CASE WHEN image_prompt_tokens > 0 THEN image_prompt_tokens * image_price ELSE 0 END
                + CASE WHEN cached_tokens > 0 THEN cached_tokens * cache_read_price ELSE 0 END
                -- cache writes: 1-hour ones at their price, the rest (5-minute or duration not reported) at cache write
                + CASE WHEN cache_write_tokens - coalesce(cache_write_1h_tokens, 0) > 0
                       THEN (cache_write_tokens - coalesce(cache_write_1h_tokens, 0)) * cache_write_price ELSE 0 END
                + CASE WHEN cache_write_1h_tokens > 0 THEN cache_write_1h_tokens * cache_write_1h_price ELSE 0 END
                + completion_tokens * output_price
            ) / 1e6 * ratio
            -- server-side tools, billed per request
            + (CASE WHEN web_search_requests > 0 THEN web_search_requests * web_search_price ELSE 0 END
               + CASE WHEN web_fetch_requests > 0 THEN web_fetch_requests * web_fetch_price ELSE 0 END) * ratio
        END AS estimated_cost_usd
    FROM priced
)
SELECT
    c.request_id,
    c.ts,
    c.usage_date,
    c.key_name,
    coalesce(o.team, 'unassigned') AS team,
    c.model,
    c.logged_model,
    c.priced_model,
    coalesce(c.price_category, c.gateway_category) AS billing_category,
    c.usage_status,
    c.prompt_tokens,
    c.completion_tokens,
    c.prompt_tokens + c.completion_tokens AS total_tokens,
    c.cached_tokens,
    c.cache_write_tokens,
    c.reasoning_tokens,
    c.cache_write_5m_tokens,
    c.cache_write_1h_tokens,
    c.audio_prompt_tokens,
    c.image_prompt_tokens,
    c.web_search_requests,
    c.web_fetch_requests,
    CASE WHEN c.price_category = 'per_call' THEN 'per_call'
         WHEN c.estimated_cost_usd IS NOT NULL THEN c.token_basis END AS estimate_basis,
    c.estimated_cost_usd,
    c.billed_cost_usd,
    c.price_version_id,
    c.price_source,
    CASE WHEN c.estimated_cost_usd IS NOT NULL THEN 'priced'
         WHEN c.price_version_id IS NULL THEN 'unpriced'
         WHEN c.prompt_tokens IS NULL OR c.completion_tokens IS NULL THEN 'unknown_usage'
         ELSE 'missing_price' END AS pricing_status,
    c.seen_in,
    c.source_ip,
    c.task_id
FROM costed AS c
LEFT JOIN key_owners AS o
    ON o.key_name = c.key_name
   AND o.effective_from <= c.usage_date
   AND (o.effective_to IS NULL OR c.usage_date < o.effective_to)
ORDER BY c.usage_date, c.ts, c.request_id;
