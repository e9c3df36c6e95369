-- stg_ledger_units: every consume row of the window (not corrections) with the ratios it says were
-- applied; for a token-billed row with known tokens (is_checked) also the units its own ratios give
-- (ledger_units, sql/macros/ledger_units.sql) beside the units it was billed, and why they differ.
-- Grain: one gateway consume row. Input: stg_gateway_rows (the window). No parameters. A view, not a
-- table: each reader computes only the columns it reads (writing 100,000 request ids a day into a
-- temporary table cost more than the check itself).
-- ledger_price_days groups it by day, model and ratios; ledger_quota_mismatches lists its mismatches.
-- mismatch_reason (NULL when not checked or expected_units = quota_units), first that applies:
--   ratio_unreadable: `other` or a ratio in it had the wrong type (other_parse_error);
--   unmodelled_price: a tool surcharge, tiered billing or 1-hour cache writes (has_unmodelled_price);
--   ratio_missing: a ratio the tokens need is absent from `other`;
--   usage_estimated: the provider returned no usage and the gateway billed its own estimate;
--   formula_differs: none of the above: the gateway billed otherwise than its ratios say.
CREATE OR REPLACE TEMP VIEW stg_ledger_units AS
WITH calls AS (
    SELECT
        request_id, usage_date, key_name, model, billing_category, billed_usd, quota_units,
        model_ratio, completion_ratio, cache_ratio, cache_creation_ratio, group_ratio, model_price,
        other_parse_error, has_unmodelled_price, usage_estimated,
        coalesce(billing_category = 'token' AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL, false)
            AS is_checked,
        greatest(prompt_tokens - cached_tokens - cache_write_tokens, 0) AS uncached_tokens,
        cached_tokens, cache_write_tokens, completion_tokens
    FROM stg_gateway_rows
    WHERE is_request
),
units AS (
    SELECT
        * EXCLUDE (uncached_tokens, cached_tokens, cache_write_tokens, completion_tokens),
        CASE WHEN is_checked THEN ledger_units(uncached_tokens, cached_tokens, cache_write_tokens, completion_tokens,
                                               model_ratio, completion_ratio, cache_ratio, cache_creation_ratio,
                                               group_ratio) END AS expected_units
    FROM calls
)
SELECT
    *,
    CASE WHEN NOT is_checked OR expected_units IS NOT DISTINCT FROM quota_units THEN NULL
         WHEN other_parse_error THEN 'ratio_unreadable'
         WHEN has_unmodelled_price THEN 'unmodelled_price'
         WHEN expected_units IS NULL THEN 'ratio_missing'
         WHEN usage_estimated THEN 'usage_estimated'
         ELSE 'formula_differs' END AS mismatch_reason
FROM units;
