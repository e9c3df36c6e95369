-- price_observations: the tables that keep what the gateway ledger and the public catalog said about
-- prices, across runs (each is maintained for the window rebuilt, or per snapshot, and read whole by
-- prices.sql). Created empty when missing; no parameters.
-- Grain: one per table, below.
-- ledger_price_days: grain usage_date x model x set of applied ratios (filled by ledger_price_days.sql).
-- catalog_snapshot_prices: grain snapshot_date x model: /api/models as pulled that day (filled from
-- lake/catalog_snapshots by pipelines/lib/prices/catalog.py); prices are USD per 1M tokens or per call,
-- before group_ratio.
-- price_settings: one row: the price sources in force (COMET_LEDGER_PRICE_SOURCES), set by load_config.
CREATE TABLE IF NOT EXISTS ledger_price_days (
    usage_date DATE NOT NULL,
    model VARCHAR NOT NULL,
    billing_category VARCHAR NOT NULL,
    model_ratio DOUBLE,
    completion_ratio DOUBLE,
    cache_ratio DOUBLE,
    cache_creation_ratio DOUBLE,
    group_ratio DOUBLE NOT NULL,
    model_price DOUBLE,
    requests BIGINT NOT NULL,
    billed_usd DECIMAL(18, 6) NOT NULL,
    checked_requests BIGINT NOT NULL,
    mismatched_requests BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS catalog_snapshot_prices (
    snapshot_date DATE NOT NULL,
    model VARCHAR NOT NULL,
    billing_category VARCHAR NOT NULL,
    input_usd_per_mtok DECIMAL(18, 6),
    output_usd_per_mtok DECIMAL(18, 6),
    cache_read_usd_per_mtok DECIMAL(18, 6),
    cache_write_usd_per_mtok DECIMAL(18, 6),
    per_call_usd DECIMAL(18, 6),
    gateway_ratio DECIMAL(18, 6) NOT NULL
);
CREATE TABLE IF NOT EXISTS price_settings (sources VARCHAR[] NOT NULL);
COMMENT ON TABLE ledger_price_days IS 'The ratios CometAPI''s ledger says it applied, per day and model: what ledger-sourced prices are made of';
COMMENT ON COLUMN ledger_price_days.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN ledger_price_days.model IS 'model as the ledger names it';
COMMENT ON COLUMN ledger_price_days.billing_category IS 'token or per_call (other.model_price -1 or >= 0)';
COMMENT ON COLUMN ledger_price_days.model_ratio IS 'other.model_ratio (1 = $2 per 1M input tokens); NULL on per-call rows';
COMMENT ON COLUMN ledger_price_days.completion_ratio IS 'other.completion_ratio: output price / input price';
COMMENT ON COLUMN ledger_price_days.cache_ratio IS 'other.cache_ratio: cache-read price / input price; NULL when absent';
COMMENT ON COLUMN ledger_price_days.cache_creation_ratio IS 'other.cache_creation_ratio: cache-write price / input price; NULL when absent';
COMMENT ON COLUMN ledger_price_days.group_ratio IS 'other.group_ratio: the discount of the key''s group (0.8 = 20 % off)';
COMMENT ON COLUMN ledger_price_days.model_price IS 'other.model_price: USD per call before group_ratio; NULL on token rows';
COMMENT ON COLUMN ledger_price_days.requests IS 'consume rows with these ratios that day';
COMMENT ON COLUMN ledger_price_days.billed_usd IS 'what those rows billed (quota / 500000)';
COMMENT ON COLUMN ledger_price_days.checked_requests IS 'token rows whose billed units were recomputed from their ratios (ledger_units)';
COMMENT ON COLUMN ledger_price_days.mismatched_requests IS 'of those, rows whose units differ (listed in ledger_quota_mismatches)';
COMMENT ON TABLE catalog_snapshot_prices IS 'What /api/models said each day it was pulled: what catalog-sourced prices are made of';
COMMENT ON COLUMN catalog_snapshot_prices.snapshot_date IS 'reporting day of the pull (the last pull of a day is its snapshot)';
COMMENT ON COLUMN catalog_snapshot_prices.model IS 'the catalog''s model id';
COMMENT ON COLUMN catalog_snapshot_prices.billing_category IS 'token (input and output prices) or per_call (per_request price)';
COMMENT ON COLUMN catalog_snapshot_prices.input_usd_per_mtok IS 'pricing.input: USD per 1M input tokens, before gateway_ratio';
COMMENT ON COLUMN catalog_snapshot_prices.output_usd_per_mtok IS 'pricing.output: USD per 1M output tokens, before gateway_ratio';
COMMENT ON COLUMN catalog_snapshot_prices.cache_read_usd_per_mtok IS 'pricing.cache_read when listed (CometAPI''s catalog lists none); NULL: not listed';
COMMENT ON COLUMN catalog_snapshot_prices.cache_write_usd_per_mtok IS 'pricing.cache_write when listed; NULL: not listed';
COMMENT ON COLUMN catalog_snapshot_prices.per_call_usd IS 'pricing.per_request: USD per call, before gateway_ratio';
COMMENT ON COLUMN catalog_snapshot_prices.gateway_ratio IS 'pricing.group_ratio when listed, else 1 (the prices are then CometAPI''s own)';
COMMENT ON TABLE price_settings IS 'The price sources estimates may use (COMET_LEDGER_PRICE_SOURCES), as of the last config load';
COMMENT ON COLUMN price_settings.sources IS 'a subset of config, ledger, catalog, in that (precedence) order';
