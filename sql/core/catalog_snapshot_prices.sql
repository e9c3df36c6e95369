-- catalog_snapshot_prices: what /api/models said each day it was pulled (pipelines/lib/prices/catalog.py lands
-- one snapshot a reporting day; unusable entries went to rejects instead). prices.sql makes catalog
-- price versions of it. Grain: snapshot_date x model. Input: lake/catalog_snapshots
-- ($catalog_snapshot_files). Rebuilt whole (one row per listed model a day: small); the table itself:
-- price_observations.sql.
DELETE FROM catalog_snapshot_prices;
INSERT INTO catalog_snapshot_prices
SELECT snapshot_date, model, billing_category, input_usd_per_mtok, output_usd_per_mtok, cache_read_usd_per_mtok,
       cache_write_usd_per_mtok, per_call_usd, gateway_ratio
FROM read_parquet($catalog_snapshot_files, hive_partitioning = false, union_by_name = true)
ORDER BY snapshot_date, model;
