-- quota_daily: CometAPI's reported spend and requests per reporting day and key, as of the latest
-- pull that covered the day. A key missing from that pull had no usage that day.
-- Grain: usage_date × key_name. Inputs: stg_quota_pulls, stg_quota_daily.
-- Parameters: $start, $end: the window rebuilt (delete + insert).
CREATE TABLE IF NOT EXISTS quota_daily (
    usage_date DATE NOT NULL,
    key_name VARCHAR NOT NULL,
    reported_cost_usd DECIMAL(18, 6) NOT NULL,
    reported_requests BIGINT NOT NULL,
    pulled_at TIMESTAMPTZ NOT NULL,
    pull_id VARCHAR NOT NULL
);
COMMENT ON TABLE quota_daily IS 'CometAPI query service: spend and requests per reporting day and key, from the latest pull covering the day';
COMMENT ON COLUMN quota_daily.usage_date IS 'reporting day (the service''s daily_quota date, assumed to be in COMET_LEDGER_TIMEZONE)';
COMMENT ON COLUMN quota_daily.key_name IS 'key display name (daily_quota token_name); names need not be unique, same-name keys are summed';
COMMENT ON COLUMN quota_daily.reported_cost_usd IS 'USD the service reported for the key that day (quota_used)';
COMMENT ON COLUMN quota_daily.reported_requests IS 'requests the service reported for the key that day (request_count)';
COMMENT ON COLUMN quota_daily.pulled_at IS 'UTC time of the pull these figures come from';
COMMENT ON COLUMN quota_daily.pull_id IS 'the pull in lake/quota_pulls these figures come from';

BEGIN TRANSACTION;
DELETE FROM quota_daily WHERE usage_date BETWEEN $start AND $end;
INSERT INTO quota_daily
WITH latest_pull AS (
    SELECT usage_date, pull_id
    FROM stg_quota_pulls
    WHERE usage_date BETWEEN $start AND $end
    QUALIFY row_number() OVER (PARTITION BY usage_date ORDER BY pulled_at DESC, pull_id DESC) = 1
)
SELECT
    d.usage_date,
    d.key_name,
    sum(d.reported_cost_usd)::DECIMAL(18, 6),
    sum(d.reported_requests)::BIGINT,
    any_value(d.pulled_at),
    d.pull_id
FROM stg_quota_daily AS d
JOIN latest_pull USING (usage_date, pull_id)
GROUP BY d.usage_date, d.key_name, d.pull_id
ORDER BY d.usage_date, d.key_name;
COMMIT;
