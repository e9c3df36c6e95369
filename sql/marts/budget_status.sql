-- budget_status: how each budget stands in each of its periods: reported spend to date, a forecast
-- to the end of the period, and the thresholds crossed.
-- Grain: budget_id x period_start. Inputs: budgets, recon_key_daily (reported spend per key and day,
-- with the team that owned the key that day). Parameters: $trailing_days (the forecast's window).
--
-- As of: the latest reporting day recon_key_daily holds; "to date" means up to that day. The table
-- depends on the warehouse alone (no clock), so the same data gives the same rows.
-- Periods: every period of a budget row from the one holding the warehouse's first reporting day (or
--   the row's effective_from, if later) to the one holding the as-of day (or the row's last).
-- Spend (spend_usd): reported_cost_usd summed over the period's days up to the as-of day; account =
--   every key, team = the keys the team owned on each day (recon_key_daily.team), key = that key name.
-- Forecast (forecast_usd): spend to date + daily mean x days remaining. The daily mean is the scope's
--   reported spend over the $trailing_days reporting days ending on the period's as-of day, divided by
--   that many days (a day without spend counts as 0; fewer days while the warehouse holds fewer); the
--   days remaining are the period's days after the as-of day. A closed period's forecast is its spend.
-- Thresholds: crossed_pct lists the thresholds_pct the spend has reached (spend >= amount x pct / 100),
--   forecast_crossed_pct those the forecast reaches. status, the first that applies: exceeded (spend >=
--   amount), forecast_exceeded (forecast >= amount), warning (a threshold reached), ok.
-- Partial: is_partial_day when the as-of day is one recon_key_daily marks partial (not over when it
--   was built): the spend and the forecast count that day so far.
-- Rebuilt whole on every run: budgets x periods is small, and an edited budget applies to its history.
CREATE OR REPLACE TABLE budget_status AS
WITH
held AS (
    SELECT min(usage_date) AS first_day, max(usage_date) AS as_of FROM recon_key_daily
),
partial_days AS (
    SELECT DISTINCT usage_date FROM recon_key_daily WHERE is_partial_day
),
daily AS (
    SELECT usage_date, 'account' AS scope, NULL::VARCHAR AS name, sum(reported_cost_usd) AS usd
    FROM recon_key_daily GROUP BY usage_date
    UNION ALL
    SELECT usage_date, 'team', team, sum(reported_cost_usd) FROM recon_key_daily GROUP BY usage_date, team
    UNION ALL
    SELECT usage_date, 'key', key_name, sum(reported_cost_usd) FROM recon_key_daily GROUP BY usage_date, key_name
),
periods AS (
    SELECT
        b.*,
        unnest(generate_series(
            greatest(b.effective_from, date_trunc(b.period, h.first_day)::DATE),
            least(coalesce(b.effective_to - 1, h.as_of), h.as_of),
            CASE b.period WHEN 'day' THEN INTERVAL 1 DAY WHEN 'week' THEN INTERVAL 7 DAY ELSE INTERVAL 1 MONTH END
        ))::DATE AS period_start
    FROM budgets AS b, held AS h
    WHERE h.as_of IS NOT NULL
),
dated AS (
    SELECT
        p.*,
        CASE p.period WHEN 'day' THEN p.period_start WHEN 'week' THEN p.period_start + 6
             ELSE (p.period_start + INTERVAL 1 MONTH)::DATE - 1 END AS period_end,
        h.as_of AS warehouse_as_of,
        h.first_day
    FROM periods AS p, held AS h
),
windowed AS (
    SELECT
        *,
        least(period_end, warehouse_as_of) AS as_of_day,
        least($trailing_days::INTEGER, least(period_end, warehouse_as_of) - first_day + 1)::INTEGER AS trailing_days
    FROM dated
),
measured AS (
    SELECT
        w.budget_id, w.period_start,
        coalesce(sum(x.usd) FILTER (WHERE x.usage_date >= w.period_start), 0)::DECIMAL(18, 6) AS spend_usd,
        coalesce(sum(x.usd) FILTER (WHERE x.usage_date > w.as_of_day - w.trailing_days), 0)::DOUBLE AS trailing_usd
    FROM windowed AS w
    LEFT JOIN daily AS x
        ON x.scope = w.scope AND x.name IS NOT DISTINCT FROM w.name
        AND x.usage_date BETWEEN least(w.period_start, w.as_of_day - w.trailing_days + 1) AND w.as_of_day
    GROUP BY w.budget_id, w.period_start
),
projected AS (
    SELECT
        w.*,
        m.spend_usd,
        m.trailing_usd / w.trailing_days AS daily_mean_usd,
        w.period_end - w.as_of_day AS days_remaining,
        m.spend_usd::DOUBLE + m.trailing_usd / w.trailing_days * (w.period_end - w.as_of_day) AS forecast_usd
    FROM windowed AS w
    JOIN measured AS m USING (budget_id, period_start)
)
SELECT
    budget_id, scope, name, period, period_start, period_end,
    period_end >= warehouse_as_of AS is_current,
    amount_usd, thresholds_pct,
    as_of_day AS as_of,
    as_of_day IN (SELECT usage_date FROM partial_days) AS is_partial_day,
    (as_of_day - period_start + 1)::INTEGER AS days_elapsed,
    days_remaining::INTEGER AS days_remaining,
    spend_usd,
    round(100 * spend_usd::DOUBLE / amount_usd::DOUBLE, 2) AS spent_pct,
    trailing_days::INTEGER AS trailing_days,
    daily_mean_usd,
    forecast_usd,
    round(100 * forecast_usd / amount_usd::DOUBLE, 2) AS forecast_pct,
    -- exact: DECIMAL(38, 6) x DECIMAL(18, 6) holds 100 x any amount (DECIMAL(18, 6) x DECIMAL(18, 6) is DECIMAL(18, 12),
    -- which overflows from $10,000 at 100 %)
    list_filter(thresholds_pct, lambda t: spend_usd * 100 >= amount_usd::DECIMAL(38, 6) * t::DECIMAL(18, 6)) AS crossed_pct,
    list_filter(thresholds_pct, lambda t: forecast_usd * 100 >= amount_usd::DOUBLE * t) AS forecast_crossed_pct,
    CASE WHEN spend_usd >= amount_usd THEN 'exceeded'
         WHEN forecast_usd >= amount_usd::DOUBLE THEN 'forecast_exceeded'
         WHEN len(crossed_pct) > 0 THEN 'warning'
         ELSE 'ok' END AS status
FROM projected
ORDER BY budget_id, period_start;
COMMENT ON TABLE budget_status IS 'Each budget in each of its periods: reported spend to date, forecast to the period''s end (trailing mean x days remaining), thresholds crossed';
COMMENT ON COLUMN budget_status.budget_id IS 'the budget (budgets.budget_id), e.g. team:team-a/month';
COMMENT ON COLUMN budget_status.scope IS 'account, team or key';
COMMENT ON COLUMN budget_status.name IS 'team or key name; NULL for the account';
COMMENT ON COLUMN budget_status.period IS 'day, week (Monday to Sunday) or month';
COMMENT ON COLUMN budget_status.period_start IS 'first reporting day of the period';
COMMENT ON COLUMN budget_status.period_end IS 'last reporting day of the period (inclusive)';
COMMENT ON COLUMN budget_status.is_current IS 'the period holds the latest reporting day in the warehouse (alerts look at these)';
COMMENT ON COLUMN budget_status.amount_usd IS 'the budget for the period, USD (the row in force for the period)';
COMMENT ON COLUMN budget_status.thresholds_pct IS 'the budget''s warning thresholds, % of the amount';
COMMENT ON COLUMN budget_status.as_of IS 'last reporting day counted: the period''s end, or the latest day in the warehouse if earlier';
COMMENT ON COLUMN budget_status.is_partial_day IS 'as_of is a reporting day that was not over when recon_key_daily was built (recon_key_daily.is_partial_day): spend and forecast count it so far';
COMMENT ON COLUMN budget_status.days_elapsed IS 'reporting days of the period up to as_of';
COMMENT ON COLUMN budget_status.days_remaining IS 'days of the period after as_of (0: closed)';
COMMENT ON COLUMN budget_status.spend_usd IS 'reported spend (query service) of the scope from period_start to as_of';
COMMENT ON COLUMN budget_status.spent_pct IS '100 x spend_usd / amount_usd';
COMMENT ON COLUMN budget_status.trailing_days IS 'days averaged for the forecast: 7 ending on as_of, fewer while the warehouse holds fewer';
COMMENT ON COLUMN budget_status.daily_mean_usd IS 'mean reported spend per day over those days (days without spend count as 0)';
COMMENT ON COLUMN budget_status.forecast_usd IS 'spend_usd + daily_mean_usd x days_remaining: the projected spend at the period''s end';
COMMENT ON COLUMN budget_status.forecast_pct IS '100 x forecast_usd / amount_usd';
COMMENT ON COLUMN budget_status.crossed_pct IS 'thresholds the spend to date has reached';
COMMENT ON COLUMN budget_status.forecast_crossed_pct IS 'thresholds the forecast reaches by the period''s end';
COMMENT ON COLUMN budget_status.status IS 'exceeded (spend >= amount), forecast_exceeded (forecast >= amount), warning (a threshold reached) or ok';
