-- Spend by team this month: what to charge back (reported by CometAPI), what your logs explain
-- (estimated) and what CometAPI's ledger billed. "This month" is the month of the latest reporting
-- day in the warehouse; for another month write its first day instead, e.g. DATE '2026-10-01'.
SELECT
    month,
    team,
    sum(requests)::BIGINT AS requests,
    sum(reported_cost_usd) AS reported_usd,
    round(sum(estimated_cost_usd), 6) AS estimated_usd,
    sum(billed_cost_usd) AS billed_usd,
    round(100 * sum(reported_cost_usd) / sum(sum(reported_cost_usd)) OVER (), 2) AS share_pct
FROM chargeback_monthly
WHERE month = date_trunc('month', (SELECT max(usage_date) FROM quota_daily))::DATE
GROUP BY month, team
ORDER BY reported_usd DESC, team;
