-- ledger_price_days: the ratios the gateway applied, per reporting day, model and set of ratios; the
-- observations ledger-sourced price versions are made of (sql/core/prices.sql).
-- Grain: usage_date x model x billing_category x (model_ratio, completion_ratio, cache_ratio,
-- cache_creation_ratio, group_ratio, model_price). Inputs: stg_gateway_rows, stg_ledger_units (the
-- window; the table itself: price_observations.sql). Parameters: $start, $end: the reporting days rebuilt (delete-then-insert).
-- Only consume rows (not corrections) whose `other` was read whole: a row with a ratio of the wrong
-- type makes no price (it is listed in ledger_quota_mismatches as ratio_unreadable). A token row needs
-- model_ratio, completion_ratio and group_ratio; a per-call row model_price >= 0 and group_ratio.
DELETE FROM ledger_price_days WHERE usage_date BETWEEN $start AND $end;
INSERT INTO ledger_price_days
SELECT
    g.usage_date, g.model, g.billing_category,
    CASE WHEN g.billing_category = 'token' THEN g.model_ratio END AS model_ratio,
    CASE WHEN g.billing_category = 'token' THEN g.completion_ratio END AS completion_ratio,
    CASE WHEN g.billing_category = 'token' THEN g.cache_ratio END AS cache_ratio,
    CASE WHEN g.billing_category = 'token' THEN g.cache_creation_ratio END AS cache_creation_ratio,
    g.group_ratio,
    CASE WHEN g.billing_category = 'per_call' THEN g.model_price END AS model_price,
    count(*) AS requests,
    sum(g.billed_usd) AS billed_usd,
    count(u.request_id) AS checked_requests,
    count(u.mismatch_reason) AS mismatched_requests
FROM stg_gateway_rows AS g
LEFT JOIN stg_ledger_units AS u USING (request_id)
WHERE g.is_request AND NOT g.other_parse_error AND g.model IS NOT NULL AND g.group_ratio >= 0
  AND ((g.billing_category = 'token' AND g.model_ratio >= 0 AND g.completion_ratio >= 0)
       OR (g.billing_category = 'per_call' AND g.model_price >= 0))
GROUP BY ALL
ORDER BY ALL;
