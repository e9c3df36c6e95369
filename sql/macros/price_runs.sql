-- price_runs(rel, version_source): price versions made of dated observations of each model's prices
-- (the one definition of the rule; sql/core/prices.sql calls it for the ledger's ratios and for the
-- catalog's snapshots). Per model, consecutive observations with the same price_key are one version
-- (a run), in force from the first day it was seen to the first day of the next version (NULL: still in
-- force); a key seen again after another one starts a new version.
-- Input: a relation (table or CTE name) with model, seen_date (DATE) and price_key (VARCHAR: every
-- number the version is made of, so rows with the same key carry the same numbers), one row per model
-- and seen_date, and any other columns; version_source: 'ledger' or 'catalog'.
-- Output: per version the input columns of its first observation (seen_date as first_seen_date), plus
-- last_seen_date, effective_to and price_version_id (model@first_seen_date#first 8 hex of
-- md5(version_source|price_key)).
-- Grain: model x version (one row per run of equal price_key).
CREATE OR REPLACE TEMP MACRO price_runs(rel, version_source) AS TABLE
WITH marked AS (
    SELECT
        *,
        CASE WHEN price_key IS DISTINCT FROM lag(price_key) OVER (PARTITION BY model ORDER BY seen_date)
             THEN 1 ELSE 0 END AS pr_is_new
    FROM query_table(rel)
),
numbered AS (
    SELECT * EXCLUDE (pr_is_new), sum(pr_is_new) OVER (PARTITION BY model ORDER BY seen_date) AS pr_run
    FROM marked
),
runs AS (
    SELECT
        * EXCLUDE (seen_date),
        seen_date AS first_seen_date,
        max(seen_date) OVER (PARTITION BY model, pr_run) AS last_seen_date
    FROM numbered
    QUALIFY row_number() OVER (PARTITION BY model, pr_run ORDER BY seen_date) = 1
)
SELECT
    * EXCLUDE (pr_run),
    lead(first_seen_date) OVER (PARTITION BY model ORDER BY pr_run) AS effective_to,
    model || '@' || strftime(first_seen_date, '%Y-%m-%d') || '#' || left(md5(version_source || '|' || price_key), 8)
        AS price_version_id
FROM runs;
