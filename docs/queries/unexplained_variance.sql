-- Unexplained variance: key-days where what CometAPI reported differs from what your logs explain
-- by more than the tolerance (or cannot be compared), largest first, with the causes in words.
SELECT
    usage_date,
    key_name,
    team,
    status,
    reported_cost_usd,
    round(estimated_cost_usd, 6) AS estimated_cost_usd,
    billed_cost_usd,
    round(variance_usd, 6) AS variance_usd,
    round(variance_pct, 2) AS variance_pct,
    explanation
FROM recon_key_daily
WHERE is_flagged
ORDER BY abs(variance_usd) DESC NULLS FIRST, usage_date, key_name;
