-- anomalies: things a finance reviewer or an operator should look at, each with the numbers, the
-- evidence (request ids, IPs, snapshots) and what to do next in plain words.
-- Grain: one finding (finding_id = md5 of kind | usage_date | key_name | evidence, so a rebuild of
-- the same data gives the same ids). Inputs: quota_daily, quota_restatements, recon_key_daily,
-- requests (the window's days only), key_ip_daily (every day up to $end), balance_snapshots.
-- Parameters: $start, $end: the reporting days rebuilt; $detected_at: the build's time (stamped on
-- every row rebuilt); a snapshot's reporting day is reporting_day(fetched_at) (sql/staging/reporting_day.sql);
-- is_partial_day: usage_date was not over when the row was built (is_partial_day, same file);
-- $baseline_days, $min_history_days, $spike_ratio, $spike_mads, $spike_min_usd (spend_spike);
-- $balance_tolerance_usd, $balance_tolerance_pct (balance_jump, top_up); $burn_days,
-- $runway_critical_days, $runway_warning_days (runway); $restatement_warning_usd,
-- $restatement_warning_pct (restatement severity). pipelines/lib/reconciliation/anomalies.py holds the defaults.
--
-- Rebuild: the key-day kinds (spend_spike, new_source_ip, unlogged_gateway_requests, restatement,
-- unpriced_model) are deleted and re-inserted for usage_date in [$start, $end]; their history (the
-- baseline, the IPs seen before) is read from every earlier day in the warehouse, from the small
-- tables (quota_daily, key_ip_daily): only the window's own requests are read, whatever the history. The balance-ledger
-- kinds (top_up, balance_jump, runway) and price_change belong to no reporting-day partition (balance_snapshots is
-- itself rebuilt whole, point-in-time), so they are rebuilt whole on every run. One transaction.
--
-- Methods, kind by kind:
-- spend_spike (warning): per key and day, the reported cost (quota_daily) against the key's trailing
--   baseline: the median of the $baseline_days previous days, counting a day without a quota_daily row
--   as $0, but only days since the key first appears in quota_daily (a new key's short history is not
--   padded with zeros). No finding until the key has $min_history_days days of history. A day is a
--   spike when its cost exceeds all three of: $spike_ratio x median (relative), median + $spike_mads x
--   1.4826 x MAD (robust z-score: noisy keys need a bigger jump) and median + $spike_min_usd (material).
--   With a median and MAD of 0 (a mostly idle key) any day more than $spike_min_usd is a spike.
--   amount_usd: the excess over the baseline.
-- new_source_ip (warning; critical when none of the IP's requests that day is in your logs): a
--   (key, requests.source_ip) pair seen on a day and on no earlier day; source_ip is the client log's,
--   else the gateway ledger's. A key's first day with any IP is its reference: no finding that day
--   (nothing to compare with). Requests without an IP are ignored. amount_usd: billed (else estimated)
--   USD of the IP's requests that day.
-- unlogged_gateway_requests (critical): per key-day, calls CometAPI's ledger billed that your client
--   logs do not hold (recon_key_daily.gateway_only_requests / gateway_only_usd, with their IPs and ids
--   from requests). Only days the ledger covers. The leaked-key signal. amount_usd: billed USD.
-- restatement (warning when |change| >= $restatement_warning_usd or >= $restatement_warning_pct % of
--   the earlier figure or the earlier figure was 0; else info): every quota_restatements row.
--   amount_usd: the change (new - previous).
-- unpriced_model (warning): per model and day, requests with pricing_status 'unpriced'; key_name is
--   the key when one key used it, else NULL (the keys are in the evidence). amount_usd: what the ledger
--   billed for them (NULL without ledger).
-- balance ledger, per pair of consecutive balance snapshots (a, b) of one account, reporting days
--   da <= db: credit added = (balance_b - balance_a) + (spent_b - spent_a), spent = total_used_usd.
--   top_up (info): credit added > tolerance. balance_jump (warning): credit added < -tolerance (credit
--   removed), or the change in lifetime spend outside what the daily figures explain: at least the
--   days wholly between the snapshots (da < day < db), at most every day they touch (da..db), widened
--   by restatements of days before da pulled after a (a late correction is billed at some moment
--   before it is pulled). Tolerance: max($balance_tolerance_usd, $balance_tolerance_pct % of the
--   larger of the change and the upper bound). A pair is judged only once quota_daily reaches db
--   (until then the later day's figures are incomplete). amount_usd: the unexplained or added USD.
-- runway (critical < $runway_critical_days days or balance <= 0, warning < $runway_warning_days,
--   else info): one finding per account for its latest snapshot: balance / average daily spend over
--   the $burn_days reporting days ending on the latest day before the snapshot's day that quota_daily
--   holds (conservative: if the pipeline lags, the last known week is used). amount_usd: the balance.
-- price_change (warning): a ledger-sourced price version (prices.source = 'ledger') that follows
--   another of the same model: the day the ratios the gateway applied to it changed. usage_date: the
--   first day of the new price; key_name NULL. amount_usd: what the ledger billed for the model while
--   the new price was in force (ledger_price_days), the spend the change affects. Rebuilt whole.
CREATE TABLE IF NOT EXISTS anomalies (
    finding_id VARCHAR NOT NULL,
    detected_at TIMESTAMPTZ NOT NULL,
    usage_date DATE NOT NULL,
    is_partial_day BOOLEAN NOT NULL,
    key_name VARCHAR,
    kind VARCHAR NOT NULL,
    severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    detail VARCHAR NOT NULL,
    amount_usd DOUBLE,
    evidence VARCHAR NOT NULL,
    action VARCHAR NOT NULL
);
COMMENT ON TABLE anomalies IS 'Findings to look at (spend spikes, new source IPs, unlogged gateway calls, balance jumps, top-ups, runway, restatements, unpriced models, price changes), each with its numbers, evidence and next step';
COMMENT ON COLUMN anomalies.finding_id IS 'md5 of kind, usage_date, key_name and evidence: stable across rebuilds of the same data';
COMMENT ON COLUMN anomalies.detected_at IS 'UTC time of the build that produced the row';
COMMENT ON COLUMN anomalies.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE the finding is about (balance kinds: the later snapshot''s day)';
COMMENT ON COLUMN anomalies.is_partial_day IS 'usage_date was not over when the finding was made (today or later): judged on the day so far, judged again by the run after the day ends';
COMMENT ON COLUMN anomalies.key_name IS 'key display name; NULL for account-level findings (balance kinds) and models used by several keys';
COMMENT ON COLUMN anomalies.kind IS 'spend_spike, new_source_ip, unlogged_gateway_requests, restatement, unpriced_model, top_up, balance_jump, runway or price_change';
COMMENT ON COLUMN anomalies.severity IS 'info, warning or critical';
COMMENT ON COLUMN anomalies.detail IS 'what was found, with the numbers, in a sentence for a finance reviewer';
COMMENT ON COLUMN anomalies.amount_usd IS 'money at stake in USD (spike: excess over baseline; IP / unlogged: billed; restatement: change; top_up / balance_jump: added or unexplained; runway: balance); NULL when not money';
COMMENT ON COLUMN anomalies.evidence IS 'what to look up: request ids, IPs, pull ids, snapshot ids, baseline days';
COMMENT ON COLUMN anomalies.action IS 'what to do next, in plain words';

BEGIN TRANSACTION;
DELETE FROM anomalies
WHERE (usage_date BETWEEN $start AND $end
       AND kind IN ('spend_spike', 'new_source_ip', 'unlogged_gateway_requests', 'restatement', 'unpriced_model'))
   OR kind IN ('top_up', 'balance_jump', 'runway', 'price_change');
INSERT INTO anomalies
WITH
-- spend_spike ------------------------------------------------------------------------------------
key_first AS (
    SELECT key_name, min(usage_date) AS first_day FROM quota_daily GROUP BY key_name
),
key_calendar AS (
    SELECT key_name,
        unnest(generate_series(greatest(first_day, $start::DATE - $baseline_days::INTEGER), $end::DATE,
                               INTERVAL 1 DAY))::DATE AS usage_date
    FROM key_first
),
daily_cost AS (
    SELECT c.key_name, c.usage_date, coalesce(q.reported_cost_usd, 0)::DOUBLE AS cost_usd
    FROM key_calendar AS c
    LEFT JOIN quota_daily AS q USING (key_name, usage_date)
),
baselines AS (
    SELECT
        *,
        count(*) OVER w AS history_days,
        count(*) FILTER (WHERE cost_usd = 0) OVER w AS idle_days,
        min(usage_date) OVER w AS baseline_from,
        median(cost_usd) OVER w AS baseline_usd,
        mad(cost_usd) OVER w AS mad_usd
    FROM daily_cost
    WINDOW w AS (PARTITION BY key_name ORDER BY usage_date
                 ROWS BETWEEN $baseline_days::INTEGER PRECEDING AND 1 PRECEDING)
),
judged_days AS (
    SELECT
        *,
        greatest($spike_ratio * baseline_usd, baseline_usd + $spike_mads * 1.4826 * mad_usd,
                 baseline_usd + $spike_min_usd) AS threshold_usd
    FROM baselines
    WHERE usage_date BETWEEN $start AND $end AND history_days >= $min_history_days
),
spend_spike AS (
    SELECT
        usage_date, key_name, 'spend_spike' AS kind, 'warning' AS severity,
        printf('Key %s spent $%.6f on %s, %s its baseline of $%.6f (median daily spend over the %d previous days, '
               || '%d of them without spend); the spike threshold was $%.6f.',
               key_name, cost_usd, usage_date,
               CASE WHEN baseline_usd > 0 THEN printf('%.1f times', cost_usd / baseline_usd) ELSE 'against' END,
               baseline_usd, history_days, idle_days, threshold_usd) AS detail,
        cost_usd - baseline_usd AS amount_usd,
        printf('cost_usd=%.6f; baseline_days=%s..%s; median_usd=%.6f; mad_usd=%.6f',
               cost_usd, baseline_from, usage_date - 1, baseline_usd, mad_usd) AS evidence,
        'Check which applications used this key that day (requests by model and source IP); if the spend is not '
        || 'expected, lower the key''s quota or disable it in the CometAPI console.' AS action
    FROM judged_days
    WHERE cost_usd > threshold_usd
),
-- new_source_ip ----------------------------------------------------------------------------------
ip_days AS (
    -- every (key, IP) day up to the window's end, from the small per-day summary of requests
    SELECT key_name, source_ip, usage_date, requests, unlogged_requests AS unlogged, cost_usd AS usd
    FROM key_ip_daily
    WHERE usage_date <= $end
),
ip_history AS (
    SELECT
        *,
        min(usage_date) OVER (PARTITION BY key_name, source_ip) AS ip_first_day,
        min(usage_date) OVER (PARTITION BY key_name) AS key_first_day
    FROM ip_days
),
new_ips AS (
    SELECT
        n.*,
        (SELECT count(DISTINCT o.source_ip) FROM ip_days AS o
         WHERE o.key_name = n.key_name AND o.usage_date < n.usage_date) AS known_ips
    FROM ip_history AS n
    WHERE n.usage_date = n.ip_first_day AND n.usage_date > n.key_first_day
      AND n.usage_date BETWEEN $start AND $end
),
new_ip_requests AS (
    -- the request ids behind each new address (requests of the window's days only)
    SELECT r.key_name, r.source_ip, r.usage_date, list(r.request_id ORDER BY r.ts, r.request_id) AS ids
    FROM requests AS r
    SEMI JOIN new_ips AS n ON n.key_name = r.key_name AND n.source_ip = r.source_ip AND n.usage_date = r.usage_date
    WHERE r.usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
new_source_ip AS (
    SELECT
        usage_date, key_name, 'new_source_ip' AS kind,
        CASE WHEN unlogged = requests THEN 'critical' ELSE 'warning' END AS severity,
        printf('Key %s was used from %s for the first time on %s: %d request%s (%s), %s; before that day the key '
               || 'had been used from %d other address%s since %s.',
               key_name, source_ip, usage_date, requests, CASE WHEN requests = 1 THEN '' ELSE 's' END,
               CASE WHEN usd IS NULL THEN 'cost unknown' ELSE printf('$%.6f', usd) END,
               CASE WHEN unlogged = requests THEN 'none of them in your client logs'
                    WHEN unlogged = 0 THEN 'all of them in your client logs'
                    ELSE printf('%d of them missing from your client logs', unlogged) END,
               known_ips, CASE WHEN known_ips = 1 THEN '' ELSE 'es' END, key_first_day) AS detail,
        usd AS amount_usd,
        printf('ip=%s; request_ids=%s%s', source_ip, array_to_string(list_slice(ids, 1, 10), ','),
               CASE WHEN len(ids) > 10 THEN printf(' (+%d more)', len(ids) - 10) ELSE '' END) AS evidence,
        CASE WHEN unlogged = requests
             THEN 'Nothing in your logs explains these calls: check the request log for this IP; if it is not yours, '
                  || 'disable and rotate the key in the CometAPI console.'
             ELSE 'Confirm the address belongs to your infrastructure (a new server, office or CI runner); if it does '
                  || 'not, disable and rotate the key in the CometAPI console.' END AS action
    FROM new_ips
    JOIN new_ip_requests USING (key_name, source_ip, usage_date)
),
-- unlogged_gateway_requests ----------------------------------------------------------------------
unlogged_ids AS (
    SELECT
        usage_date, key_name,
        list(DISTINCT source_ip ORDER BY source_ip) FILTER (WHERE source_ip IS NOT NULL) AS ips,
        list(request_id ORDER BY ts, request_id) AS ids
    FROM requests
    WHERE seen_in = 'gateway' AND usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
unlogged_gateway_requests AS (
    SELECT
        r.usage_date, r.key_name, 'unlogged_gateway_requests' AS kind, 'critical' AS severity,
        printf('CometAPI billed %d request%s ($%.6f) on key %s on %s that %s not in your client logs; %s.',
               r.gateway_only_requests, CASE WHEN r.gateway_only_requests = 1 THEN '' ELSE 's' END,
               r.gateway_only_usd, r.key_name, r.usage_date,
               CASE WHEN r.gateway_only_requests = 1 THEN 'is' ELSE 'are' END,
               CASE WHEN coalesce(len(u.ips), 0) = 0 THEN 'the ledger records no source IP'
                    ELSE printf('source IP%s: %s', CASE WHEN len(u.ips) = 1 THEN '' ELSE 's' END,
                                array_to_string(u.ips, ', ')) END) AS detail,
        r.gateway_only_usd::DOUBLE AS amount_usd,
        printf('ips=%s; request_ids=%s%s', coalesce(array_to_string(u.ips, ','), ''),
               coalesce(array_to_string(list_slice(u.ids, 1, 20), ','), ''),
               CASE WHEN len(u.ids) > 20 THEN printf(' (+%d more)', len(u.ids) - 20) ELSE '' END) AS evidence,
        'Check the request log for these IPs; if they are not yours, disable and rotate the key in the CometAPI '
        || 'console.' AS action
    FROM recon_key_daily AS r
    LEFT JOIN unlogged_ids AS u USING (usage_date, key_name)
    WHERE r.usage_date BETWEEN $start AND $end AND r.gateway_only_requests > 0
),
-- restatement ------------------------------------------------------------------------------------
restatement AS (
    SELECT
        usage_date, key_name, 'restatement' AS kind,
        CASE WHEN abs(delta_cost_usd) >= $restatement_warning_usd OR previous_cost_usd = 0
                  OR 100 * abs(delta_cost_usd) / previous_cost_usd >= $restatement_warning_pct
             THEN 'warning' ELSE 'info' END AS severity,
        printf('CometAPI changed its figure for key %s on %s from $%.6f (%d requests, pulled %s) to $%.6f '
               || '(%d requests, pulled %s): %s$%.6f.',
               key_name, usage_date, previous_cost_usd, previous_requests,
               strftime(timezone('UTC', previous_pulled_at), '%Y-%m-%d %H:%M:%S UTC'), new_cost_usd, new_requests,
               strftime(timezone('UTC', pulled_at), '%Y-%m-%d %H:%M:%S UTC'),
               CASE WHEN delta_cost_usd < 0 THEN '-' ELSE '+' END, abs(delta_cost_usd)) AS detail,
        delta_cost_usd::DOUBLE AS amount_usd,
        printf('pull_id=%s; previous_pulled_at=%s; pulled_at=%s', pull_id,
               strftime(timezone('UTC', previous_pulled_at), '%Y-%m-%dT%H:%M:%S.%fZ'),
               strftime(timezone('UTC', pulled_at), '%Y-%m-%dT%H:%M:%S.%fZ')) AS evidence,
        'The warehouse now uses the new figure; re-issue any report or chargeback already sent that used the old '
        || 'one for this day (late billing of async tasks such as video, music and image jobs is the usual cause).'
            AS action
    FROM quota_restatements
    WHERE usage_date BETWEEN $start AND $end
),
-- unpriced_model ---------------------------------------------------------------------------------
unpriced_days AS (
    SELECT
        usage_date, coalesce(model, '(unknown)') AS model,
        count(*) AS requests,
        sum(billed_cost_usd)::DOUBLE AS billed_usd,
        list(DISTINCT coalesce(key_name, '(unknown)') ORDER BY coalesce(key_name, '(unknown)')) AS keys,
        list(request_id ORDER BY ts, request_id) AS ids
    FROM requests
    WHERE pricing_status = 'unpriced' AND usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
unpriced_model AS (
    SELECT
        usage_date, CASE WHEN len(keys) = 1 AND keys[1] <> '(unknown)' THEN keys[1] END AS key_name,
        'unpriced_model' AS kind, 'warning' AS severity,
        printf('%d request%s of model %s on %s (key%s %s) %s no price in the price table, so %s not estimated%s.',
               requests, CASE WHEN requests = 1 THEN '' ELSE 's' END, model, usage_date,
               CASE WHEN len(keys) = 1 THEN '' ELSE 's' END, array_to_string(keys, ', '),
               CASE WHEN requests = 1 THEN 'has' ELSE 'have' END,
               CASE WHEN requests = 1 THEN 'its cost is' ELSE 'their cost is' END,
               CASE WHEN billed_usd IS NULL THEN ''
                    ELSE printf('; CometAPI''s ledger billed $%.6f for them', billed_usd) END) AS detail,
        billed_usd AS amount_usd,
        printf('model=%s; keys=%s; request_ids=%s%s', model, array_to_string(keys, ','),
               array_to_string(list_slice(ids, 1, 10), ','),
               CASE WHEN len(ids) > 10 THEN printf(' (+%d more)', len(ids) - 10) ELSE '' END) AS evidence,
        printf('Add a price row for %s to the prices file (COMET_LEDGER_PRICES), checking the rate at the source, '
               || 'then run comet-ledger reprice to estimate the affected days.', model) AS action
    FROM unpriced_days
),
-- price_change ----------------------------------------------------------------------------------
ledger_versions AS (
    SELECT
        *,
        lag(price_version_id) OVER m AS prev_version_id,
        lag(input_usd_per_mtok) OVER m AS prev_input, lag(output_usd_per_mtok) OVER m AS prev_output,
        lag(per_call_usd) OVER m AS prev_per_call, lag(gateway_ratio) OVER m AS prev_ratio,
        lag(source_detail) OVER m AS prev_detail
    FROM prices
    WHERE source = 'ledger'
    WINDOW m AS (PARTITION BY model ORDER BY effective_from)
    QUALIFY prev_version_id IS NOT NULL
),
price_change_spend AS (
    SELECT v.price_version_id, coalesce(sum(d.requests), 0) AS requests, coalesce(sum(d.billed_usd), 0)::DOUBLE AS billed_usd
    FROM ledger_versions AS v
    LEFT JOIN ledger_price_days AS d
        ON d.model = v.model AND d.usage_date >= v.effective_from
       AND (v.effective_to IS NULL OR d.usage_date < v.effective_to)
    GROUP BY v.price_version_id
),
price_change AS (
    SELECT
        v.effective_from AS usage_date, NULL AS key_name, 'price_change' AS kind, 'warning' AS severity,
        printf('CometAPI''s ledger shows a new price for %s from %s: %s (before: %s). Spend billed at the new price '
               || 'since: $%.6f over %d request%s.',
               v.model, v.effective_from,
               CASE WHEN v.billing_category = 'per_call' THEN printf('$%g per call x %g', v.per_call_usd::DOUBLE, v.gateway_ratio::DOUBLE)
                    ELSE printf('$%g in / $%g out per 1M tokens x %g', v.input_usd_per_mtok::DOUBLE, v.output_usd_per_mtok::DOUBLE,
                                v.gateway_ratio::DOUBLE) END,
               CASE WHEN v.prev_input IS NULL AND v.prev_per_call IS NOT NULL
                    THEN printf('$%g per call x %g', v.prev_per_call::DOUBLE, v.prev_ratio::DOUBLE)
                    ELSE printf('$%g in / $%g out per 1M tokens x %g', v.prev_input::DOUBLE, v.prev_output::DOUBLE, v.prev_ratio::DOUBLE) END,
               s.billed_usd, s.requests, CASE WHEN s.requests = 1 THEN '' ELSE 's' END) AS detail,
        s.billed_usd AS amount_usd,
        printf('model=%s; price_versions=%s -> %s; %s -> %s', v.model, v.prev_version_id, v.price_version_id,
               v.prev_detail, v.source_detail) AS evidence,
        printf('Check the new rate for %s against CometAPI''s announcements; if your prices file (COMET_LEDGER_PRICES) '
               || 'lists %s, add a version from %s, then run comet-ledger reprice --dry-run.', v.model, v.model,
               v.effective_from) AS action
    FROM ledger_versions AS v
    JOIN price_change_spend AS s USING (price_version_id)
),
-- balance ledger ---------------------------------------------------------------------------------
snapshots AS (
    SELECT
        username, snapshot_id, fetched_at,
        balance_usd::DOUBLE AS balance_usd, total_used_usd::DOUBLE AS used_usd,
        reporting_day(fetched_at) AS snapshot_day,
        strftime(timezone('UTC', fetched_at), '%Y-%m-%d %H:%M UTC') AS fetched_text
    FROM balance_snapshots
),
pairs AS (
    SELECT
        *,
        lag(snapshot_id) OVER s AS prev_snapshot_id,
        lag(fetched_at) OVER s AS prev_fetched_at,
        lag(fetched_text) OVER s AS prev_fetched_text,
        lag(snapshot_day) OVER s AS prev_day,
        lag(balance_usd) OVER s AS prev_balance_usd,
        lag(used_usd) OVER s AS prev_used_usd
    FROM snapshots
    WINDOW s AS (PARTITION BY username ORDER BY fetched_at, snapshot_id)
    QUALIFY prev_snapshot_id IS NOT NULL
),
pair_bounds AS (
    SELECT
        p.*,
        (p.balance_usd - p.prev_balance_usd) + (p.used_usd - p.prev_used_usd) AS credit_added_usd,
        p.used_usd - p.prev_used_usd AS spend_change_usd,
        (SELECT coalesce(sum(q.reported_cost_usd), 0)::DOUBLE FROM quota_daily AS q
         WHERE q.usage_date > p.prev_day AND q.usage_date < p.snapshot_day)
        + (SELECT coalesce(sum(r.delta_cost_usd), 0)::DOUBLE FROM quota_restatements AS r
           WHERE r.delta_cost_usd < 0 AND r.usage_date < p.prev_day AND r.pulled_at > p.prev_fetched_at) AS low_usd,
        (SELECT coalesce(sum(q.reported_cost_usd), 0)::DOUBLE FROM quota_daily AS q
         WHERE q.usage_date BETWEEN p.prev_day AND p.snapshot_day)
        + (SELECT coalesce(sum(r.delta_cost_usd), 0)::DOUBLE FROM quota_restatements AS r
           WHERE r.delta_cost_usd > 0 AND r.usage_date < p.prev_day AND r.pulled_at > p.prev_fetched_at) AS high_usd,
        coalesce((SELECT max(q.usage_date) FROM quota_daily AS q) >= p.snapshot_day, false) AS daily_figures_complete
    FROM pairs AS p
),
pair_judged AS (
    SELECT
        *,
        greatest($balance_tolerance_usd,
                 $balance_tolerance_pct / 100.0 * greatest(abs(spend_change_usd), abs(high_usd))) AS tolerance_usd,
        printf('username=%s; snapshots=%s -> %s; fetched_at=%s -> %s', username, prev_snapshot_id, snapshot_id,
               prev_fetched_text, fetched_text) AS pair_evidence
    FROM pair_bounds
),
top_up AS (
    SELECT
        snapshot_day AS usage_date, NULL AS key_name, 'top_up' AS kind, 'info' AS severity,
        printf('The balance was topped up by $%.6f between %s and %s (balance $%.2f -> $%.2f while lifetime spend '
               || 'grew by $%.6f).', credit_added_usd, prev_fetched_text, fetched_text, prev_balance_usd, balance_usd,
               spend_change_usd) AS detail,
        credit_added_usd AS amount_usd,
        pair_evidence || '; check=credit_added' AS evidence,
        'Match the top-up with its invoice or payment record; nothing else to do.' AS action
    FROM pair_judged
    WHERE credit_added_usd > tolerance_usd
),
balance_jump AS (
    SELECT
        snapshot_day AS usage_date, NULL AS key_name, 'balance_jump' AS kind, 'warning' AS severity,
        printf('The balance fell by $%.6f more than lifetime spend grew between %s and %s (balance $%.2f -> $%.2f, '
               || 'lifetime spend +$%.6f): credit was removed.', -credit_added_usd, prev_fetched_text, fetched_text,
               prev_balance_usd, balance_usd, spend_change_usd) AS detail,
        -credit_added_usd AS amount_usd,
        pair_evidence || '; check=credit_removed' AS evidence,
        'Ask CometAPI support or your account owner why credit was removed (expiry, chargeback or a manual '
        || 'adjustment).' AS action
    FROM pair_judged
    WHERE credit_added_usd < -tolerance_usd
    UNION ALL
    SELECT
        snapshot_day, NULL, 'balance_jump', 'warning',
        printf('CometAPI''s lifetime spend rose by $%.6f between %s and %s, but the daily figures of every key for '
               || '%s..%s add up to at most $%.6f: $%.6f of spend is not explained by any key''s daily report.',
               spend_change_usd, prev_fetched_text, fetched_text, prev_day, snapshot_day, high_usd,
               spend_change_usd - high_usd),
        spend_change_usd - high_usd,
        pair_evidence || '; check=spend_above_daily',
        'Compare the CometAPI console''s usage with quota_daily for these days: spend no key''s daily figure '
        || 'explains may come from a deleted, renamed or leaked key; disable and rotate any key you cannot account for.'
    FROM pair_judged
    WHERE daily_figures_complete AND spend_change_usd > high_usd + tolerance_usd
    UNION ALL
    SELECT
        snapshot_day, NULL, 'balance_jump', 'warning',
        printf('CometAPI''s lifetime spend rose by only $%.6f between %s and %s, but the daily figures for the days '
               || 'wholly between them already add up to $%.6f: the daily reports exceed the lifetime counter by $%.6f.',
               spend_change_usd, prev_fetched_text, fetched_text, low_usd, low_usd - spend_change_usd),
        spend_change_usd - low_usd,
        pair_evidence || '; check=spend_below_daily',
        'Re-pull these days (comet-ledger backfill) and compare with the CometAPI console: a daily figure may have '
        || 'been restated or refunded since it was pulled.'
    FROM pair_judged
    WHERE daily_figures_complete AND spend_change_usd < low_usd - tolerance_usd
),
latest AS (
    SELECT * FROM snapshots
    QUALIFY row_number() OVER (PARTITION BY username ORDER BY fetched_at DESC, snapshot_id DESC) = 1
),
burn AS (
    SELECT
        l.*,
        e.burn_end,
        e.burn_end - ($burn_days::INTEGER - 1) AS burn_start,
        (SELECT coalesce(sum(q.reported_cost_usd), 0)::DOUBLE FROM quota_daily AS q
         WHERE q.usage_date BETWEEN e.burn_end - ($burn_days::INTEGER - 1) AND e.burn_end) / $burn_days::INTEGER
            AS burn_usd_per_day
    FROM latest AS l,
        LATERAL (SELECT max(q.usage_date) AS burn_end FROM quota_daily AS q WHERE q.usage_date < l.snapshot_day) AS e
),
burn_days_left AS (
    SELECT
        *,
        CASE WHEN burn_usd_per_day > 0 THEN balance_usd / burn_usd_per_day END AS days_left,
        CASE WHEN burn_usd_per_day > 0 AND balance_usd > 0
             THEN snapshot_day + least(floor(balance_usd / burn_usd_per_day), 36500)::INTEGER END AS runs_out_on
    FROM burn
),
runway AS (
    SELECT
        snapshot_day AS usage_date, NULL AS key_name, 'runway' AS kind,
        CASE WHEN balance_usd <= 0 OR days_left < $runway_critical_days THEN 'critical'
             WHEN days_left < $runway_warning_days THEN 'warning' ELSE 'info' END AS severity,
        CASE WHEN balance_usd <= 0
                 THEN printf('The balance is $%.2f at %s: the account has run out of credit.', balance_usd, fetched_text)
             WHEN burn_end IS NULL
                 THEN printf('The balance is $%.2f at %s; no daily spend is reported before %s, so the runway cannot '
                             || 'be estimated.', balance_usd, fetched_text, snapshot_day)
             WHEN burn_usd_per_day = 0
                 THEN printf('The balance is $%.2f at %s; no spend is reported for %s..%s, so the balance is not '
                             || 'being used up.', balance_usd, fetched_text, burn_start, burn_end)
             ELSE printf('The balance of $%.2f at %s lasts about %.1f days at the average daily spend of $%.6f over '
                         || '%s..%s (until about %s).', balance_usd, fetched_text, days_left, burn_usd_per_day,
                         burn_start, burn_end, runs_out_on) END AS detail,
        balance_usd AS amount_usd,
        printf('username=%s; snapshot=%s; fetched_at=%s; burn_days=%s..%s', username, snapshot_id, fetched_text,
               coalesce(burn_start::VARCHAR, '-'), coalesce(burn_end::VARCHAR, '-')) AS evidence,
        CASE WHEN balance_usd <= 0 THEN 'Top up the CometAPI balance now: calls fail without credit.'
             WHEN days_left < $runway_critical_days
                 THEN printf('Top up the CometAPI balance now or cut spending: at this rate it runs out by about %s.',
                             runs_out_on)
             WHEN days_left < $runway_warning_days
                 THEN printf('Plan a top-up of the CometAPI balance before about %s.', runs_out_on)
             ELSE 'No action needed; review the runway at the next budget review.' END AS action
    FROM burn_days_left
),
findings AS (
    SELECT * FROM spend_spike
    UNION ALL SELECT * FROM new_source_ip
    UNION ALL SELECT * FROM unlogged_gateway_requests
    UNION ALL SELECT * FROM restatement
    UNION ALL SELECT * FROM unpriced_model
    UNION ALL SELECT * FROM top_up
    UNION ALL SELECT * FROM balance_jump
    UNION ALL SELECT * FROM runway
    UNION ALL SELECT * FROM price_change
)
SELECT
    md5(concat_ws('|', kind, usage_date::VARCHAR, coalesce(key_name, ''), evidence)) AS finding_id,
    $detected_at::TIMESTAMPTZ AS detected_at,
    usage_date, is_partial_day(usage_date) AS is_partial_day, key_name, kind, severity, detail, amount_usd, evidence,
    action
FROM findings
ORDER BY usage_date, kind, key_name NULLS FIRST, finding_id;
COMMIT;
