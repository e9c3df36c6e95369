-- service_day_boundary: which day boundary CometAPI's daily_quota uses, read off the data.
-- Grain: one row per candidate boundary: UTC, UTC+8 (Etc/GMT-8) and the configured reporting zone
-- (reporting_zone(), sql/staging/reporting_day.sql), each zone once.
-- Inputs: lake/gateway_logs ($gateway_log_files: the ledger's latest 31 UTC days, $first_utc ..
-- $last_utc; a schema-only file, and NULL days, when there is no ledger), quota_daily.
-- Parameters: $first_utc, $last_utc, $inferred_at (the build's time).
-- For each candidate the ledger's money rows (consume rows and corrections, refunds negative: what
-- daily_quota adds up) are summed per key and per day in the candidate's zone, over the candidate's
-- days that the UTC days hold whole and that quota_daily reports, and compared with quota_daily key-day
-- by key-day: a key-day matches when the cost agrees to 0.000001 USD per reported request (at least
-- 0.000001) and the request counts are equal (a key-day absent on one side counts as 0 there).
-- is_best_fit: the most key-days matched (ties: the configured zone, then UTC); none without a ledger.
CREATE OR REPLACE TABLE service_day_boundary AS
WITH
candidates AS (
    SELECT DISTINCT ON (zone) candidate, zone
    FROM (VALUES (0, reporting_zone(), reporting_zone()), (1, 'UTC', 'UTC'), (2, 'UTC+8', 'Etc/GMT-8'))
        AS c(priority, candidate, zone)
    ORDER BY zone, priority
),
ledger AS (
    SELECT created_at::TIMESTAMPTZ AS created_at, key_name, billed_usd::DECIMAL(18, 6) AS billed_usd,
        log_type = 2 AND NOT is_correction AS is_request
    FROM read_parquet($gateway_log_files, hive_partitioning = false, union_by_name = true)
    WHERE log_type IN (2, 6) AND utc_date BETWEEN $first_utc AND $last_utc
),
days AS (
    SELECT c.candidate, g.d::DATE AS day
    FROM candidates AS c, generate_series($first_utc::DATE - 1, $last_utc::DATE + 1, INTERVAL 1 DAY) AS g(d)
    WHERE timezone(c.zone, g.d::DATE::TIMESTAMP) >= timezone('UTC', $first_utc::DATE::TIMESTAMP)
      AND timezone(c.zone, (g.d::DATE + 1)::TIMESTAMP) <= timezone('UTC', ($last_utc::DATE + 1)::TIMESTAMP)
      AND g.d::DATE IN (SELECT usage_date FROM quota_daily)
),
sums AS (
    SELECT c.candidate, CAST(timezone(c.zone, l.created_at) AS DATE) AS day, l.key_name,
        sum(l.billed_usd) AS usd, count(*) FILTER (WHERE l.is_request) AS requests
    FROM candidates AS c, ledger AS l
    GROUP BY ALL
),
key_days AS (
    SELECT candidate, day, key_name FROM sums
    UNION
    SELECT d.candidate, d.day, q.key_name FROM days AS d JOIN quota_daily AS q ON q.usage_date = d.day
),
compared AS (
    SELECT k.candidate, k.day,
        abs(coalesce(s.usd, 0) - coalesce(q.reported_cost_usd, 0))
            <= 0.000001 * greatest(coalesce(q.reported_requests, 0), 1)
        AND coalesce(s.requests, 0) = coalesce(q.reported_requests, 0) AS matched
    FROM key_days AS k
    SEMI JOIN days AS d ON d.candidate = k.candidate AND d.day = k.day
    LEFT JOIN sums AS s ON s.candidate = k.candidate AND s.day = k.day AND s.key_name IS NOT DISTINCT FROM k.key_name
    LEFT JOIN quota_daily AS q ON q.usage_date = k.day AND q.key_name IS NOT DISTINCT FROM k.key_name
),
scored AS (
    SELECT c.candidate, c.zone, c.zone = reporting_zone() AS is_configured,
        count(x.day)::BIGINT AS key_days_compared,
        count(*) FILTER (WHERE x.matched)::BIGINT AS key_days_matched,
        min(x.day) AS first_day, max(x.day) AS last_day
    FROM candidates AS c
    LEFT JOIN compared AS x USING (candidate)
    GROUP BY ALL
)
SELECT
    candidate, zone, is_configured, key_days_compared, key_days_matched,
    round(key_days_matched / nullif(key_days_compared, 0), 4) AS match_share,
    key_days_compared > 0 AND row_number() OVER (
        ORDER BY key_days_matched DESC, is_configured DESC, zone = 'UTC' DESC) = 1 AS is_best_fit,
    first_day, last_day,
    $first_utc::DATE AS ledger_first_utc_day, $last_utc::DATE AS ledger_last_utc_day,
    $inferred_at::TIMESTAMPTZ AS inferred_at
FROM scored
ORDER BY is_configured DESC, candidate;
COMMENT ON TABLE service_day_boundary IS 'Which day boundary CometAPI''s daily_quota uses: the gateway ledger summed per key and day under each candidate boundary, compared with daily_quota key-day by key-day (the ledger''s latest 31 UTC days)';
COMMENT ON COLUMN service_day_boundary.candidate IS 'the candidate boundary: UTC, UTC+8, or the configured COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN service_day_boundary.zone IS 'IANA zone of the candidate (UTC+8 is Etc/GMT-8)';
COMMENT ON COLUMN service_day_boundary.is_configured IS 'the candidate is COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN service_day_boundary.key_days_compared IS 'key-days compared: the candidate''s days the ledger holds whole and quota_daily reports';
COMMENT ON COLUMN service_day_boundary.key_days_matched IS 'of those, key-days whose ledger sum and request count equal daily_quota''s';
COMMENT ON COLUMN service_day_boundary.match_share IS 'key_days_matched / key_days_compared (NULL when nothing was compared)';
COMMENT ON COLUMN service_day_boundary.is_best_fit IS 'the candidate that matches the most key-days (ties: the configured zone, then UTC); none without a gateway ledger';
COMMENT ON COLUMN service_day_boundary.first_day IS 'first day compared (in the candidate''s zone)';
COMMENT ON COLUMN service_day_boundary.last_day IS 'last day compared';
COMMENT ON COLUMN service_day_boundary.ledger_first_utc_day IS 'first UTC day of the gateway ledger read (NULL: no ledger)';
COMMENT ON COLUMN service_day_boundary.ledger_last_utc_day IS 'last UTC day of the gateway ledger read';
COMMENT ON COLUMN service_day_boundary.inferred_at IS 'UTC time of the build that compared them';
