-- recon_key_daily: for every key and reporting day, what CometAPI reported (query service), what
-- its ledger billed (gateway), and what your logs explain (estimated), with a status and the causes.
-- Grain: usage_date x key_name. Inputs: quota_daily, requests, stg_gateway_rows, stg_gateway_coverage,
-- quota_restatements, key_owners. Parameters: $start, $end (window rebuilt), $tolerance_usd,
-- $tolerance_pct (within_tolerance: |variance| <= max($tolerance_usd, $tolerance_pct % of reported)).
--
-- estimated_cost_usd / logged_requests count only what your logs hold (tokens from your logs, or
-- per-call prices); billed_cost_usd / gateway_requests what the ledger holds (NULL when the ledger
-- does not cover the day); reported_* what the query service reports. variance = reported - estimated.
-- Status, first that applies: missing_report, missing_logs, matched (|variance| <= 0.000001 USD per
-- reported request: unit rounding), unpriced (logged requests without a price: the estimate cannot
-- cover the report, whatever the amount), within_tolerance, over_reported / under_reported.
-- is_flagged: the one definition of a flagged key-day, which every report and check reads: a status
-- other than matched and within_tolerance.
-- is_partial_day: the key-day was not over when the row was built (is_partial_day, sql/staging/reporting_day.sql):
-- its figures are the day so far; the run after the day ends rebuilds it.
CREATE TABLE IF NOT EXISTS recon_key_daily (
    usage_date DATE NOT NULL,
    is_partial_day BOOLEAN NOT NULL,
    key_name VARCHAR NOT NULL,
    team VARCHAR NOT NULL,
    reported_cost_usd DECIMAL(18, 6) NOT NULL,
    reported_requests BIGINT NOT NULL,
    estimated_cost_usd DOUBLE NOT NULL,
    logged_requests BIGINT NOT NULL,
    billed_cost_usd DECIMAL(18, 6),
    gateway_requests BIGINT,
    variance_usd DOUBLE NOT NULL,
    variance_pct DOUBLE,
    tolerance_usd DOUBLE NOT NULL,
    status VARCHAR NOT NULL,
    is_flagged BOOLEAN NOT NULL,
    explanation VARCHAR NOT NULL,
    coverage_pct DOUBLE,
    unpriced_requests BIGINT NOT NULL,
    unknown_usage_requests BIGINT NOT NULL,
    gateway_only_requests BIGINT,
    gateway_only_usd DECIMAL(18, 6),
    client_only_requests BIGINT,
    adjustments_usd DECIMAL(18, 6)
);
COMMENT ON TABLE recon_key_daily IS 'Reported vs billed vs estimated per key and reporting day, with a status and the causes in words';
COMMENT ON COLUMN recon_key_daily.reported_cost_usd IS 'what the query service reports for the key-day (0 when it reports nothing)';
COMMENT ON COLUMN recon_key_daily.reported_requests IS 'requests the query service reports';
COMMENT ON COLUMN recon_key_daily.estimated_cost_usd IS 'what your logs explain: priced requests your applications logged';
COMMENT ON COLUMN recon_key_daily.logged_requests IS 'requests in your logs';
COMMENT ON COLUMN recon_key_daily.billed_cost_usd IS 'what CometAPI''s ledger billed (calls, corrections, refunds); NULL when the ledger does not cover the day';
COMMENT ON COLUMN recon_key_daily.gateway_requests IS 'calls in CometAPI''s ledger (corrections and refunds excluded); NULL when not covered';
COMMENT ON COLUMN recon_key_daily.variance_usd IS 'reported - estimated';
COMMENT ON COLUMN recon_key_daily.variance_pct IS '100 x variance / reported; NULL when reported is 0';
COMMENT ON COLUMN recon_key_daily.tolerance_usd IS 'the tolerance applied: max(tolerance_usd, tolerance_pct % of reported)';
COMMENT ON COLUMN recon_key_daily.status IS 'matched, within_tolerance, over_reported, under_reported, missing_logs, missing_report, unpriced';
COMMENT ON COLUMN recon_key_daily.is_flagged IS 'true when the key-day needs a look: status neither matched nor within_tolerance';
COMMENT ON COLUMN recon_key_daily.explanation IS 'the causes, with counts and amounts, for a finance reviewer';
COMMENT ON COLUMN recon_key_daily.coverage_pct IS 'share of reported spend explained by priced, logged requests (100 x estimated / reported)';
COMMENT ON COLUMN recon_key_daily.unpriced_requests IS 'logged requests whose model has no price that day';
COMMENT ON COLUMN recon_key_daily.unknown_usage_requests IS 'logged token-billed requests whose usage is unknown (interrupted streams, error replies)';
COMMENT ON COLUMN recon_key_daily.gateway_only_requests IS 'calls billed by CometAPI that are not in your logs';
COMMENT ON COLUMN recon_key_daily.gateway_only_usd IS 'what those calls were billed';
COMMENT ON COLUMN recon_key_daily.client_only_requests IS 'requests in your logs that the ledger does not have';
COMMENT ON COLUMN recon_key_daily.adjustments_usd IS 'late corrections and refunds in the ledger (not calls of their own)';
COMMENT ON COLUMN recon_key_daily.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN recon_key_daily.key_name IS 'key display name';
COMMENT ON COLUMN recon_key_daily.team IS 'owner of the key that day (key_owners), else unassigned';
COMMENT ON COLUMN recon_key_daily.is_partial_day IS 'the reporting day was not over when the row was built (today or later): figures so far, rebuilt by the run after the day ends';

BEGIN TRANSACTION;
DELETE FROM recon_key_daily WHERE usage_date BETWEEN $start AND $end;
INSERT INTO recon_key_daily
WITH reported AS (
    SELECT usage_date, key_name, reported_cost_usd, reported_requests
    FROM quota_daily WHERE usage_date BETWEEN $start AND $end
),
logged AS (
    SELECT
        usage_date, key_name,
        count(*) FILTER (WHERE seen_in <> 'gateway') AS logged_requests,
        coalesce(sum(estimated_cost_usd) FILTER (
            WHERE seen_in <> 'gateway' AND estimate_basis IN ('client_tokens', 'per_call')), 0) AS estimated_cost_usd,
        count(*) FILTER (WHERE seen_in <> 'gateway' AND pricing_status = 'unpriced') AS unpriced_requests,
        coalesce(sum(billed_cost_usd) FILTER (WHERE seen_in <> 'gateway' AND pricing_status = 'unpriced'), 0) AS unpriced_billed,
        string_agg(DISTINCT model, ', ' ORDER BY model) FILTER (WHERE seen_in <> 'gateway' AND pricing_status = 'unpriced') AS unpriced_models,
        count(*) FILTER (WHERE seen_in <> 'gateway' AND estimate_basis IS DISTINCT FROM 'client_tokens'
                         AND estimate_basis IS DISTINCT FROM 'per_call' AND pricing_status <> 'unpriced') AS unknown_usage_requests,
        coalesce(sum(billed_cost_usd) FILTER (WHERE seen_in <> 'gateway' AND estimate_basis IS DISTINCT FROM 'client_tokens'
                         AND estimate_basis IS DISTINCT FROM 'per_call' AND pricing_status <> 'unpriced'), 0) AS unknown_usage_billed,
        count(*) FILTER (WHERE seen_in = 'gateway') AS gateway_only_requests,
        coalesce(sum(billed_cost_usd) FILTER (WHERE seen_in = 'gateway'), 0) AS gateway_only_usd,
        count(*) FILTER (WHERE seen_in = 'client') AS client_only_requests,
        coalesce(sum(estimated_cost_usd) FILTER (WHERE seen_in = 'client'), 0) AS client_only_usd
    FROM requests
    WHERE usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
billed AS (
    SELECT
        usage_date, key_name,
        sum(billed_usd) FILTER (WHERE log_type IN (2, 6)) AS billed_cost_usd,
        count(*) FILTER (WHERE is_request) AS gateway_requests,
        -- a task's later price correction: a type-2 correction, or (since 2026-02) a type-6 row that gives
        -- back what a lower final price saves (it carries pre_consumed_quota: service/task_billing.go)
        coalesce(sum(billed_usd) FILTER (WHERE is_correction OR (log_type = 6 AND pre_consumed_quota IS NOT NULL)), 0)
            AS corrections_usd,
        coalesce(sum(billed_usd) FILTER (WHERE log_type = 6 AND pre_consumed_quota IS NULL), 0) AS refunds_usd,
        count(*) FILTER (WHERE is_request AND NOT has_request_id AND response_id IS NULL) AS unmatchable_requests,
        count(*) FILTER (WHERE is_request AND usage_estimated) AS estimated_usage_requests,
        coalesce(sum(billed_usd) FILTER (WHERE is_request AND usage_estimated), 0) AS estimated_usage_usd,
        count(*) FILTER (WHERE is_request AND has_unmodelled_price) AS unmodelled_requests,
        coalesce(sum(billed_usd) FILTER (WHERE is_request AND has_unmodelled_price), 0) AS unmodelled_usd,
        count(*) FILTER (WHERE log_type IN (2, 6) AND is_subscription) AS subscription_rows,
        coalesce(sum(billed_usd) FILTER (WHERE log_type IN (2, 6) AND is_subscription), 0) AS subscription_usd
    FROM stg_gateway_rows
    GROUP BY ALL
),
key_days AS (
    SELECT usage_date, key_name FROM reported
    UNION SELECT usage_date, key_name FROM logged
    UNION SELECT usage_date, key_name FROM billed WHERE billed_cost_usd <> 0 OR gateway_requests > 0
),
restated AS (
    SELECT usage_date, key_name, arg_min(previous_cost_usd, pulled_at) AS first_cost, arg_max(new_cost_usd, pulled_at) AS last_cost
    FROM quota_restatements WHERE usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
facts AS (
    SELECT
        k.usage_date, k.key_name,
        coalesce(o.team, 'unassigned') AS team,
        coalesce(r.reported_cost_usd, 0)::DECIMAL(18, 6) AS reported_cost_usd,
        coalesce(r.reported_requests, 0) AS reported_requests,
        r.usage_date IS NOT NULL AS is_reported,
        coalesce(l.estimated_cost_usd, 0) AS estimated_cost_usd,
        coalesce(l.logged_requests, 0) AS logged_requests,
        cov.usage_date IS NOT NULL AS covered,
        CASE WHEN cov.usage_date IS NOT NULL THEN coalesce(b.billed_cost_usd, 0) END::DECIMAL(18, 6) AS billed_cost_usd,
        CASE WHEN cov.usage_date IS NOT NULL THEN coalesce(b.gateway_requests, 0) END AS gateway_requests,
        coalesce(l.unpriced_requests, 0) AS unpriced_requests,
        coalesce(l.unpriced_billed, 0) AS unpriced_billed,
        l.unpriced_models,
        coalesce(l.unknown_usage_requests, 0) AS unknown_usage_requests,
        coalesce(l.unknown_usage_billed, 0) AS unknown_usage_billed,
        coalesce(l.gateway_only_requests, 0) AS gateway_only_requests,
        coalesce(l.gateway_only_usd, 0) AS gateway_only_usd,
        coalesce(l.client_only_requests, 0) AS client_only_requests,
        coalesce(l.client_only_usd, 0) AS client_only_usd,
        coalesce(b.corrections_usd, 0) AS corrections_usd,
        coalesce(b.refunds_usd, 0) AS refunds_usd,
        coalesce(b.unmatchable_requests, 0) AS unmatchable_requests,
        coalesce(b.estimated_usage_requests, 0) AS estimated_usage_requests,
        coalesce(b.estimated_usage_usd, 0) AS estimated_usage_usd,
        coalesce(b.unmodelled_requests, 0) AS unmodelled_requests,
        coalesce(b.unmodelled_usd, 0) AS unmodelled_usd,
        coalesce(b.subscription_rows, 0) AS subscription_rows,
        coalesce(b.subscription_usd, 0) AS subscription_usd,
        rs.first_cost AS restated_from,
        rs.last_cost AS restated_to
    FROM key_days AS k
    LEFT JOIN reported AS r USING (usage_date, key_name)
    LEFT JOIN logged AS l USING (usage_date, key_name)
    LEFT JOIN billed AS b USING (usage_date, key_name)
    LEFT JOIN stg_gateway_coverage AS cov USING (usage_date)
    LEFT JOIN restated AS rs USING (usage_date, key_name)
    LEFT JOIN key_owners AS o
        ON o.key_name = k.key_name AND o.effective_from <= k.usage_date
       AND (o.effective_to IS NULL OR k.usage_date < o.effective_to)
),
judged AS (
    SELECT
        *,
        reported_cost_usd::DOUBLE - estimated_cost_usd AS variance_usd,
        greatest($tolerance_usd, $tolerance_pct / 100.0 * reported_cost_usd::DOUBLE) AS tolerance_usd
    FROM facts
),
classified AS (
    SELECT
        *,
        CASE
            WHEN reported_cost_usd = 0 AND reported_requests = 0 AND logged_requests > 0 THEN 'missing_report'
            WHEN logged_requests = 0 AND (reported_cost_usd <> 0 OR reported_requests > 0) THEN 'missing_logs'
            WHEN abs(variance_usd) <= 0.000001 * greatest(reported_requests, 1) THEN 'matched'
            WHEN unpriced_requests > 0 THEN 'unpriced'
            WHEN abs(variance_usd) <= tolerance_usd THEN 'within_tolerance'
            WHEN variance_usd > 0 THEN 'over_reported'
            ELSE 'under_reported'
        END AS status
    FROM judged
)
SELECT
    usage_date,
    is_partial_day(usage_date) AS is_partial_day,
    key_name,
    team,
    reported_cost_usd,
    reported_requests,
    estimated_cost_usd,
    logged_requests,
    billed_cost_usd,
    gateway_requests,
    variance_usd,
    CASE WHEN reported_cost_usd <> 0 THEN 100 * variance_usd / reported_cost_usd::DOUBLE END AS variance_pct,
    tolerance_usd,
    status,
    status NOT IN ('matched', 'within_tolerance') AS is_flagged,
    concat_ws('; ',
        CASE WHEN logged_requests = 0 AND (reported_cost_usd <> 0 OR reported_requests > 0)
             THEN printf('CometAPI reports %d requests ($%.6f) and your logs hold none for this key-day',
                         reported_requests, reported_cost_usd) END,
        CASE WHEN reported_cost_usd = 0 AND reported_requests = 0 AND logged_requests > 0
             THEN printf('your logs hold %d requests (estimated $%.6f) but CometAPI reports nothing for this key-day',
                         logged_requests, estimated_cost_usd) END,
        CASE WHEN gateway_only_requests > 0
             THEN printf('%d request%s billed by CometAPI %s missing from your logs: $%.6f', gateway_only_requests,
                         CASE WHEN gateway_only_requests = 1 THEN '' ELSE 's' END,
                         CASE WHEN gateway_only_requests = 1 THEN 'is' ELSE 'are' END, gateway_only_usd)
                  || CASE WHEN unmatchable_requests > 0
                          THEN printf(' (%d of the ledger''s calls carry neither a request id nor a response id, '
                                      'as CometAPI logged them before 2026-02: they cannot be matched to your logs)',
                                      unmatchable_requests) ELSE '' END END,
        CASE WHEN unpriced_requests > 0
             THEN printf('%d request%s of unpriced model%s %s have no estimate (billed $%.6f)', unpriced_requests,
                         CASE WHEN unpriced_requests = 1 THEN '' ELSE 's' END,
                         CASE WHEN unpriced_models LIKE '%,%' THEN 's' ELSE '' END, unpriced_models, unpriced_billed) END,
        CASE WHEN unknown_usage_requests > 0
             THEN printf('%d request%s with unknown usage (interrupted streams or error replies) have no estimate (billed $%.6f)',
                         unknown_usage_requests, CASE WHEN unknown_usage_requests = 1 THEN '' ELSE 's' END, unknown_usage_billed) END,
        CASE WHEN estimated_usage_requests > 0
             THEN printf('CometAPI billed %d call%s on its own estimate of the prompt because the provider returned '
                         'no usage (an interrupted stream is billed, not free): $%.6f', estimated_usage_requests,
                         CASE WHEN estimated_usage_requests = 1 THEN '' ELSE 's' END, estimated_usage_usd) END,
        CASE WHEN unmodelled_requests > 0
             THEN printf('%d call%s billed with tool surcharges, tiered billing or 1-hour cache writes, which the price '
                         'table does not model: $%.6f', unmodelled_requests,
                         CASE WHEN unmodelled_requests = 1 THEN '' ELSE 's' END, unmodelled_usd) END,
        CASE WHEN subscription_rows > 0
             THEN printf('paid by a subscription, not the balance: $%.6f in %d ledger row%s', subscription_usd,
                         subscription_rows, CASE WHEN subscription_rows = 1 THEN '' ELSE 's' END) END,
        CASE WHEN corrections_usd <> 0
             THEN printf('late billing corrections in the ledger: %s$%.6f', CASE WHEN corrections_usd > 0 THEN '+' ELSE '-' END, abs(corrections_usd)) END,
        CASE WHEN refunds_usd <> 0
             THEN printf('refunds in the ledger: -$%.6f', abs(refunds_usd)) END,
        CASE WHEN client_only_requests > 0 AND covered
             THEN printf('%d request%s in your logs %s not billed by CometAPI (estimated $%.6f)', client_only_requests,
                         CASE WHEN client_only_requests = 1 THEN '' ELSE 's' END,
                         CASE WHEN client_only_requests = 1 THEN 'was' ELSE 'were' END, client_only_usd) END,
        CASE WHEN covered AND billed_cost_usd IS DISTINCT FROM reported_cost_usd
             THEN printf('CometAPI''s ledger bills $%.6f but the query service reports $%.6f', billed_cost_usd, reported_cost_usd) END,
        CASE WHEN restated_from IS NOT NULL
             THEN printf('restated by a later pull: $%.6f -> $%.6f', restated_from, restated_to) END,
        CASE WHEN NOT covered
             THEN 'the gateway ledger does not cover this day (COMETAPI_ACCESS_TOKEN not set, or not pulled): causes cannot be itemised' END,
        CASE WHEN abs(variance_usd) > 0.000001 * greatest(reported_requests, 1)
                  AND abs(variance_usd) <= 0.000002 * greatest(reported_requests, 1)
             THEN 'within CometAPI''s per-request rounding: each request is billed in whole quota units of $0.000002, '
                  'at least 1 unit a billable request' END,
        CASE WHEN abs(variance_usd) <= 0.000001 * greatest(reported_requests, 1)
             THEN printf('estimated $%.6f matches reported $%.6f', estimated_cost_usd, reported_cost_usd)
             ELSE printf('reported $%.6f - estimated $%.6f = %s$%.6f', reported_cost_usd, estimated_cost_usd,
                         CASE WHEN variance_usd < 0 THEN '-' ELSE '' END, abs(variance_usd)) END
    ) AS explanation,
    CASE WHEN reported_cost_usd <> 0 THEN 100 * estimated_cost_usd / reported_cost_usd::DOUBLE END AS coverage_pct,
    unpriced_requests,
    unknown_usage_requests,
    CASE WHEN covered THEN gateway_only_requests END AS gateway_only_requests,
    CASE WHEN covered THEN gateway_only_usd END::DECIMAL(18, 6) AS gateway_only_usd,
    CASE WHEN covered THEN client_only_requests END AS client_only_requests,
    CASE WHEN covered THEN corrections_usd + refunds_usd END::DECIMAL(18, 6) AS adjustments_usd
FROM classified
ORDER BY usage_date, key_name;
COMMIT;
