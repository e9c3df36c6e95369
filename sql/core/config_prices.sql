-- config_prices: the operator's effective-dated price versions from COMET_LEDGER_PRICES, validated on
-- load (pipelines/lib/prices/tables.py). Grain: price version. Input: the registered table prices_input.
-- effective_from is inclusive, effective_to exclusive (NULL: open); both are reporting days. The last
-- five price columns are optional in the CSV (NULL when a file leaves them out). `prices` (prices.sql)
-- puts these first, before what the ledger and the catalog say.
CREATE OR REPLACE TABLE config_prices AS
SELECT
    price_version_id, model, billing_category,
    input_usd_per_mtok, output_usd_per_mtok, cache_read_usd_per_mtok, cache_write_usd_per_mtok,
    per_call_usd, gateway_ratio, effective_from, effective_to, source,
    cache_write_1h_usd_per_mtok, audio_input_usd_per_mtok, image_input_usd_per_mtok,
    web_search_usd_per_request, web_fetch_usd_per_request
FROM prices_input
ORDER BY model, effective_from;
COMMENT ON TABLE config_prices IS 'The operator''s price file (COMET_LEDGER_PRICES) as validated: the config source of prices';
COMMENT ON COLUMN config_prices.price_version_id IS 'model@effective_from#first 8 hex of sha256 of the CSV row: changes whenever the row changes';
COMMENT ON COLUMN config_prices.model IS 'model name as the CSV states it';
COMMENT ON COLUMN config_prices.billing_category IS 'token or per_call';
COMMENT ON COLUMN config_prices.input_usd_per_mtok IS 'USD per 1M uncached input tokens, before gateway_ratio';
COMMENT ON COLUMN config_prices.output_usd_per_mtok IS 'USD per 1M output tokens';
COMMENT ON COLUMN config_prices.cache_read_usd_per_mtok IS 'USD per 1M cache-read tokens; NULL: no such tokens expected';
COMMENT ON COLUMN config_prices.cache_write_usd_per_mtok IS 'USD per 1M cache-write tokens; NULL: no such tokens expected';
COMMENT ON COLUMN config_prices.per_call_usd IS 'USD per call for per_call models';
COMMENT ON COLUMN config_prices.gateway_ratio IS 'multiplier CometAPI applies (0.8: its 20 % discount)';
COMMENT ON COLUMN config_prices.effective_from IS 'first reporting day in force (inclusive)';
COMMENT ON COLUMN config_prices.effective_to IS 'first reporting day no longer in force (exclusive); NULL: open';
COMMENT ON COLUMN config_prices.source IS 'the CSV''s source column: where the numbers come from';
COMMENT ON COLUMN config_prices.cache_write_1h_usd_per_mtok IS 'USD per 1M 1-hour cache-write tokens; NULL: none expected';
COMMENT ON COLUMN config_prices.audio_input_usd_per_mtok IS 'USD per 1M audio input tokens; NULL: none expected';
COMMENT ON COLUMN config_prices.image_input_usd_per_mtok IS 'USD per 1M image input tokens; NULL: none expected';
COMMENT ON COLUMN config_prices.web_search_usd_per_request IS 'USD per server-side web search; NULL: none expected';
COMMENT ON COLUMN config_prices.web_fetch_usd_per_request IS 'USD per server-side web fetch; NULL: none expected';
