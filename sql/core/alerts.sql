-- alerts: one row per condition and period that the alert sensors (or `comet-ledger alerts check`)
-- found: a budget threshold crossed or forecast, a critical anomaly, a failed daily run, stale data,
-- a failed smoke test. The row is both the record and the dedupe key: a condition opens one alert per
-- period, and when it clears, one "resolved" note follows. alert_deliveries: what was sent where.
-- Grain: alert_id (kind, scope, threshold, period_start) / alert_id x note x channel. Written only by
-- pipelines/lib/alerts/ledger.py, under the warehouse's writer lock (publish); never rebuilt, so the
-- history survives every warehouse build. No parameters.
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    threshold_pct DOUBLE,
    period_start DATE NOT NULL,
    period_end DATE,
    severity VARCHAR NOT NULL,
    summary VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    first_sent_at TIMESTAMPTZ,
    resolved_at TIMESTAMPTZ,
    resolved_sent_at TIMESTAMPTZ
);
COMMENT ON TABLE alerts IS 'One row per alert condition and period (budget thresholds, critical anomalies, failed runs, stale data, failed smoke tests): the record, and what keeps each to one notification';
COMMENT ON COLUMN alerts.alert_id IS 'md5 of kind, scope, threshold and period_start (first 16 hex digits)';
COMMENT ON COLUMN alerts.kind IS 'budget_spend, budget_forecast, unlogged_gateway_requests, new_source_ip, runway, run_failed, data_stale or smoke_test_failed';
COMMENT ON COLUMN alerts.scope IS 'what it is about: a budget (team:team-a/month), a key (key:team-a-prod), account, job:daily_ledger, warehouse freshness, smoke_test';
COMMENT ON COLUMN alerts.threshold_pct IS 'the budget threshold crossed (budget kinds); NULL otherwise';
COMMENT ON COLUMN alerts.period_start IS 'budget kinds: first day of the budget period; anomalies: the reporting day; failures: the first day the condition was seen for';
COMMENT ON COLUMN alerts.period_end IS 'last day of the budget period or the anomaly''s day; NULL for failures (open until resolved)';
COMMENT ON COLUMN alerts.severity IS 'warning or critical';
COMMENT ON COLUMN alerts.summary IS 'the notification''s one-line title';
COMMENT ON COLUMN alerts.detail IS 'the numbers and what to do next, as sent';
COMMENT ON COLUMN alerts.status IS 'open, resolved (the condition cleared: a resolved note follows) or expired (its period ended while it held: no note)';
COMMENT ON COLUMN alerts.opened_at IS 'UTC time the condition was first found';
COMMENT ON COLUMN alerts.first_sent_at IS 'UTC time the first channel accepted the notification; NULL while none has (or none is configured)';
COMMENT ON COLUMN alerts.resolved_at IS 'UTC time the condition was found cleared, or its period over';
COMMENT ON COLUMN alerts.resolved_sent_at IS 'UTC time the first channel accepted the resolved note';

CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id VARCHAR NOT NULL,
    note VARCHAR NOT NULL,
    channel VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    last_error VARCHAR,
    claimed_by VARCHAR,
    claimed_at TIMESTAMPTZ,
    sent_at TIMESTAMPTZ,
    PRIMARY KEY (alert_id, note, channel)
);
COMMENT ON TABLE alert_deliveries IS 'Each notification of an alert (opened or resolved) to each channel: sent, pending a retry, failed or skipped';
COMMENT ON COLUMN alert_deliveries.alert_id IS 'the alert (alerts.alert_id)';
COMMENT ON COLUMN alert_deliveries.note IS 'opened or resolved';
COMMENT ON COLUMN alert_deliveries.channel IS 'slack, webhook or email';
COMMENT ON COLUMN alert_deliveries.status IS 'pending (not sent yet: tried again at the next evaluation), sent, failed (given up after 3 evaluations) or skipped (the condition cleared first, or the channel is gone)';
COMMENT ON COLUMN alert_deliveries.attempts IS 'requests made, retries with backoff included, over every evaluation';
COMMENT ON COLUMN alert_deliveries.rounds IS 'evaluations that tried it';
COMMENT ON COLUMN alert_deliveries.last_error IS 'why the last try failed, one line without secrets; NULL when none failed';
COMMENT ON COLUMN alert_deliveries.claimed_by IS 'the evaluation sending it now (so no other one sends it too); NULL when none';
COMMENT ON COLUMN alert_deliveries.claimed_at IS 'when it was claimed; a claim older than 15 minutes is taken over';
COMMENT ON COLUMN alert_deliveries.sent_at IS 'UTC time the channel accepted it';
