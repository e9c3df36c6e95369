-- ledger_price_days: the ratios the gateway applied, per reporting day, model and set of ratios; the
-- observations ledger-sourced price versions are made of (sql/core/prices.sql).
-- Grain: usage_date x model x billing_category x (model_ratio, completion_ratio, cache_ratio,
-- cache_creation_ratio, group_ratio, model_price). Inputs: stg_ledger_units (the consume rows of the
-- window), ledger_quota_mismatches (built just before: mismatched_requests). The table itself is
-- created by price_observations.sql. Parameters: $start, $end: the reporting days rebuilt
-- (delete-then-insert).
-- Only consume rows (not corrections) whose `other` was read whole: a row with a ratio of the wrong
-- type makes no price (it is listed in ledger_quota_mismatches as ratio_unreadable). A token row needs
-- model_ratio, completion_ratio and group_ratio; a per-call row model_price >= 0 and group_ratio.
DELETE FROM ledger_price_days WHERE usage_date BETWEEN $start AND $end;
INSERT INTO ledger_price_days
WITH days AS (
    SELECT
        usage_date, model, billing_category,
        CASE WHEN billing_category = 'token' THEN model_ratio END AS model_ratio,
        CASE WHEN billing_category = 'token' THEN completion_ratio END AS completion_ratio,
        CASE WHEN billing_category = 'token' THEN cache_ratio END AS cache_ratio,
        CASE WHEN billing_category = 'token' THEN cache_creation_ratio END AS cache_creation_ratio,
        group_ratio,
        CASE WHEN billing_category = 'per_call' THEN model_price END AS model_price,
        count(*) AS requests,
        sum(billed_usd) AS billed_usd,
        count(*) FILTER (WHERE is_checked) AS checked_requests
    FROM stg_ledger_units
    WHERE NOT other_parse_error AND model IS NOT NULL AND group_ratio >= 0
      AND ((billing_category = 'token' AND model_ratio >= 0 AND completion_ratio >= 0)
           OR (billing_category = 'per_call' AND model_price >= 0))
    GROUP BY ALL
),
mismatched AS (
    SELECT usage_date, model, model_ratio, completion_ratio, cache_ratio, cache_creation_ratio, group_ratio,
           count(*) AS mismatched_requests
    FROM ledger_quota_mismatches
    WHERE usage_date BETWEEN $start AND $end
    GROUP BY ALL
)
SELECT d.*, coalesce(m.mismatched_requests, 0) AS mismatched_requests
FROM days AS d
LEFT JOIN mismatched AS m
    ON d.billing_category = 'token' AND m.usage_date = d.usage_date AND m.model = d.model
   AND m.model_ratio IS NOT DISTINCT FROM d.model_ratio AND m.completion_ratio IS NOT DISTINCT FROM d.completion_ratio
   AND m.cache_ratio IS NOT DISTINCT FROM d.cache_ratio
   AND m.cache_creation_ratio IS NOT DISTINCT FROM d.cache_creation_ratio AND m.group_ratio = d.group_ratio
ORDER BY ALL;
