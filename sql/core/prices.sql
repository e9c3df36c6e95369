-- prices: the effective-dated price versions from COMET_LEDGER_PRICES, validated on load
-- (pipelines/lib/config_tables.py). Grain: price version. Input: the registered table prices_input.
-- effective_from is inclusive, effective_to exclusive (NULL: open); both are reporting days.
-- The last five price columns are optional in the CSV (NULL when a file leaves them out).
CREATE OR REPLACE TABLE prices AS
SELECT
    price_version_id, model, billing_category,
    input_usd_per_mtok, output_usd_per_mtok, cache_read_usd_per_mtok, cache_write_usd_per_mtok,
    per_call_usd, gateway_ratio, effective_from, effective_to, source,
    cache_write_1h_usd_per_mtok, audio_input_usd_per_mtok, image_input_usd_per_mtok,
    web_search_usd_per_request, web_fetch_usd_per_request
FROM prices_input
ORDER BY model, effective_from;
COMMENT ON TABLE prices IS 'Price versions per model (config/prices.csv); verify rates at the source before a review';
COMMENT ON COLUMN prices.price_version_id IS 'model@effective_from#hash of the row: changes whenever the row changes';
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
COMMENT ON COLUMN prices.gateway_ratio IS 'multiplier CometAPI applies (e.g. 0.8 for its 20 % discount); also on per-call prices';
COMMENT ON COLUMN prices.effective_from IS 'first reporting day the version is in force (inclusive)';
COMMENT ON COLUMN prices.effective_to IS 'first reporting day it is no longer in force (exclusive); NULL: still in force';
COMMENT ON COLUMN prices.source IS 'where the numbers come from';
COMMENT ON COLUMN prices.model IS 'model name; requests match it exactly or after removing a snapshot suffix';
