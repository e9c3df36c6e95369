-- prices: every price version from the three sources, each with its source; requests.sql picks, per
-- model and reporting day, the version in force from the first source that has one:
--   1. config:  the operator's COMET_LEDGER_PRICES file (config_prices.sql), always first;
--   2. ledger:  the ratios CometAPI's ledger says it applied (ledger_price_days.sql);
--   3. catalog: /api/models snapshots (catalog_snapshot_prices, pipelines/lib/prices/catalog.py).
-- Only the sources listed in price_settings (COMET_LEDGER_PRICE_SOURCES) are included.
-- Grain: price version. Inputs: config_prices, ledger_price_days, catalog_snapshot_prices, price_settings
-- (all whole; they are small). No parameters.
-- Ledger and catalog versions alike (sql/macros/price_runs.sql): per model, consecutive days with the
-- same numbers are one version, in force from the first day it was seen (effective_from =
-- first_seen_date) to the first day of the next version (NULL: still in force).
-- Ledger versions: the numbers of a day are the set of ratios that billed the most calls that day. A
-- day whose set differs from the day before starts a version: a price change read from the data
-- (anomalies kind price_change).
-- Prices: input = model_ratio x 2 USD per 1M tokens (new-api: model_ratio 1 = $2 per 1M), output =
-- input x completion_ratio, cache read = input x cache_ratio, cache write = input x cache_creation_ratio,
-- per call = model_price; gateway_ratio = group_ratio. So an estimate from a ledger version is the
-- billed amount before upstream's rounding to a whole unit (sql/macros/ledger_units.sql).
-- Catalog versions: the numbers of a day are its snapshot's prices; a version is in force from the
-- first snapshot that showed them to the first one that showed others.
-- price_version_id: config rows keep theirs (prices/tables.py); a ledger or catalog version's is
-- model@effective_from#first 8 hex of md5(source and its numbers).
CREATE OR REPLACE TABLE prices AS
WITH enabled AS (  -- all three when nothing was set
    SELECT unnest(coalesce((SELECT any_value(sources) FROM price_settings), ['config', 'ledger', 'catalog'])) AS source
),
config AS (
    SELECT
        price_version_id, model, billing_category, input_usd_per_mtok, output_usd_per_mtok,
        cache_read_usd_per_mtok, cache_write_usd_per_mtok, per_call_usd, gateway_ratio,
        effective_from, effective_to, 'config' AS source, source AS source_detail,
        NULL::DATE AS first_seen_date, NULL::DATE AS last_seen_date,
        cache_write_1h_usd_per_mtok, audio_input_usd_per_mtok, image_input_usd_per_mtok,
        web_search_usd_per_request, web_fetch_usd_per_request
    FROM config_prices
    WHERE 'config' IN (SELECT source FROM enabled)
),
ledger_keyed AS (
    SELECT *, usage_date AS seen_date,
           concat_ws('|', billing_category, coalesce(model_ratio::VARCHAR, ''), coalesce(completion_ratio::VARCHAR, ''),
                     coalesce(cache_ratio::VARCHAR, ''), coalesce(cache_creation_ratio::VARCHAR, ''),
                     group_ratio::VARCHAR, coalesce(model_price::VARCHAR, '')) AS price_key
    FROM ledger_price_days
    WHERE 'ledger' IN (SELECT source FROM enabled)
),
ledger_day AS (
    SELECT * FROM ledger_keyed
    QUALIFY row_number() OVER (PARTITION BY model, usage_date ORDER BY requests DESC, billed_usd DESC, price_key) = 1
),
ledger AS (
    SELECT
        price_version_id,
        model, billing_category,
        (model_ratio * 2)::DECIMAL(18, 6) AS input_usd_per_mtok,
        (model_ratio * 2 * completion_ratio)::DECIMAL(18, 6) AS output_usd_per_mtok,
        (model_ratio * 2 * cache_ratio)::DECIMAL(18, 6) AS cache_read_usd_per_mtok,
        (model_ratio * 2 * cache_creation_ratio)::DECIMAL(18, 6) AS cache_write_usd_per_mtok,
        model_price::DECIMAL(18, 6) AS per_call_usd,
        group_ratio::DECIMAL(18, 6) AS gateway_ratio,
        first_seen_date AS effective_from,
        effective_to,
        'ledger' AS source,
        'ledger ratios ' || price_key AS source_detail,
        first_seen_date, last_seen_date,
        NULL::DECIMAL(18, 6) AS cache_write_1h_usd_per_mtok, NULL::DECIMAL(18, 6) AS audio_input_usd_per_mtok,
        NULL::DECIMAL(18, 6) AS image_input_usd_per_mtok, NULL::DECIMAL(18, 6) AS web_search_usd_per_request,
        NULL::DECIMAL(18, 6) AS web_fetch_usd_per_request
    FROM price_runs(ledger_day, 'ledger')  -- sql/macros/price_runs.sql
),
catalog_keyed AS (
    SELECT *, snapshot_date AS seen_date,
           concat_ws('|', billing_category, coalesce(input_usd_per_mtok::VARCHAR, ''),
                     coalesce(output_usd_per_mtok::VARCHAR, ''), coalesce(cache_read_usd_per_mtok::VARCHAR, ''),
                     coalesce(cache_write_usd_per_mtok::VARCHAR, ''), coalesce(per_call_usd::VARCHAR, ''),
                     gateway_ratio::VARCHAR) AS price_key
    FROM catalog_snapshot_prices
    WHERE 'catalog' IN (SELECT source FROM enabled)
),
catalog AS (
    SELECT
        price_version_id,
        model, billing_category, input_usd_per_mtok, output_usd_per_mtok, cache_read_usd_per_mtok,
        cache_write_usd_per_mtok, per_call_usd, gateway_ratio,
        first_seen_date AS effective_from,
        effective_to,
        'catalog' AS source, '/api/models snapshots' AS source_detail, first_seen_date, last_seen_date,
        NULL::DECIMAL(18, 6) AS cache_write_1h_usd_per_mtok, NULL::DECIMAL(18, 6) AS audio_input_usd_per_mtok,
        NULL::DECIMAL(18, 6) AS image_input_usd_per_mtok, NULL::DECIMAL(18, 6) AS web_search_usd_per_request,
        NULL::DECIMAL(18, 6) AS web_fetch_usd_per_request
    FROM price_runs(catalog_keyed, 'catalog')  -- sql/macros/price_runs.sql
)
SELECT * FROM config
UNION ALL BY NAME SELECT * FROM ledger
UNION ALL BY NAME SELECT * FROM catalog
ORDER BY model, effective_from, source;
COMMENT ON TABLE prices IS 'Price versions per model from config/prices.csv, the ledger''s applied ratios and /api/models snapshots; requests use config, else ledger, else catalog';
COMMENT ON COLUMN prices.price_version_id IS 'model@effective_from#hash: config rows hash the CSV row, ledger and catalog rows their source and numbers';
COMMENT ON COLUMN prices.billing_category IS 'token (priced per token) or per_call (a price per call or task)';
COMMENT ON COLUMN prices.input_usd_per_mtok IS 'USD per 1M uncached input tokens (list price, before gateway_ratio)';
COMMENT ON COLUMN prices.output_usd_per_mtok IS 'USD per 1M output tokens, reasoning included';
COMMENT ON COLUMN prices.cache_read_usd_per_mtok IS 'USD per 1M cache-read input tokens; NULL: no such tokens expected';
COMMENT ON COLUMN prices.cache_write_usd_per_mtok IS 'USD per 1M cache-write input tokens (5-minute writes, and writes whose duration is not reported); NULL: no such tokens expected';
COMMENT ON COLUMN prices.cache_write_1h_usd_per_mtok IS 'USD per 1M 1-hour cache-write input tokens (Anthropic); NULL: no such tokens expected';
COMMENT ON COLUMN prices.audio_input_usd_per_mtok IS 'USD per 1M audio input tokens, in place of the input price; NULL: no such tokens expected';
COMMENT ON COLUMN prices.image_input_usd_per_mtok IS 'USD per 1M image input tokens, in place of the input price; NULL: no such tokens expected';
COMMENT ON COLUMN prices.web_search_usd_per_request IS 'USD per server-side web search (Anthropic server_tool_use, OpenAI Responses tool_usage); NULL: no such requests expected';
COMMENT ON COLUMN prices.web_fetch_usd_per_request IS 'USD per server-side web fetch (Anthropic server_tool_use); NULL: no such requests expected';
COMMENT ON COLUMN prices.per_call_usd IS 'USD per call for per_call models';
COMMENT ON COLUMN prices.gateway_ratio IS 'multiplier CometAPI applies (e.g. 0.8 for its 20 % discount; the ledger''s group_ratio); also on per-call prices';
COMMENT ON COLUMN prices.effective_from IS 'first reporting day the version is in force (inclusive)';
COMMENT ON COLUMN prices.effective_to IS 'first reporting day it is no longer in force (exclusive); NULL: still in force';
COMMENT ON COLUMN prices.source IS 'config (COMET_LEDGER_PRICES), ledger (ratios the gateway applied) or catalog (/api/models snapshots); requests use them in that order';
COMMENT ON COLUMN prices.source_detail IS 'config: the CSV''s source column; ledger: the ratios (category|model|completion|cache|cache write|group|model price); catalog: the snapshots';
COMMENT ON COLUMN prices.first_seen_date IS 'ledger and catalog: first reporting day (snapshot) the numbers were seen; NULL for config';
COMMENT ON COLUMN prices.last_seen_date IS 'ledger and catalog: last reporting day (snapshot) the numbers were seen; NULL for config';
COMMENT ON COLUMN prices.model IS 'model name; requests match it exactly or after removing a snapshot suffix';
