-- stg_ledger_units: every token-billed consume row of the window, with the units its own ratios give
-- (ledger_units, sql/macros/ledger_units.sql) beside the units it was billed, and why they differ.
-- Grain: one gateway consume row (not a correction) with billing_category 'token' and known tokens.
-- Input: stg_gateway_rows (the window). No parameters.
-- mismatch_reason (NULL when expected_units = quota_units), first that applies:
--   ratio_unreadable: `other` or a ratio in it had the wrong type (other_parse_error);
--   unmodelled_price: a tool surcharge, tiered billing or 1-hour cache writes (has_unmodelled_price);
--   ratio_missing: a ratio the tokens need is absent from `other`;
--   usage_estimated: the provider returned no usage and the gateway billed its own estimate;
--   formula_differs: none of the above: the gateway billed otherwise than its ratios say.
CREATE OR REPLACE TEMP TABLE stg_ledger_units AS
WITH units AS (
    SELECT
        request_id, usage_date, key_name, model, quota_units,
        prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens,
        model_ratio, completion_ratio, cache_ratio, cache_creation_ratio, group_ratio,
        other_parse_error, has_unmodelled_price, usage_estimated,
        ledger_units(greatest(prompt_tokens - cached_tokens - cache_write_tokens, 0), cached_tokens,
                     cache_write_tokens, completion_tokens, model_ratio, completion_ratio, cache_ratio,
                     cache_creation_ratio, group_ratio) AS expected_units
    FROM stg_gateway_rows
    WHERE is_request AND billing_category = 'token' AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL
)
SELECT
    *,
    CASE WHEN expected_units IS NOT DISTINCT FROM quota_units THEN NULL
         WHEN other_parse_error THEN 'ratio_unreadable'
         WHEN has_unmodelled_price THEN 'unmodelled_price'
         WHEN expected_units IS NULL THEN 'ratio_missing'
         WHEN usage_estimated THEN 'usage_estimated'
         ELSE 'formula_differs' END AS mismatch_reason
FROM units;
