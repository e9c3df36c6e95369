-- quota_restatements: every time a pull reported a different figure for a past day and key than
-- the pull before it (late billing of async tasks, corrections). A key absent from a covering pull
-- counts as 0 for that pull.
-- Grain: usage_date × key_name × pull that changed it. Inputs: stg_quota_pulls, stg_quota_daily.
-- Parameters: $start, $end: the window rebuilt (delete + insert).
CREATE TABLE IF NOT EXISTS quota_restatements (
    usage_date DATE NOT NULL,
    key_name VARCHAR NOT NULL,
    previous_cost_usd DECIMAL(18, 6) NOT NULL,
    new_cost_usd DECIMAL(18, 6) NOT NULL,
    delta_cost_usd DECIMAL(18, 6) NOT NULL,
    previous_requests BIGINT NOT NULL,
    new_requests BIGINT NOT NULL,
    previous_pulled_at TIMESTAMPTZ NOT NULL,
    pulled_at TIMESTAMPTZ NOT NULL,
    pull_id VARCHAR NOT NULL
);
COMMENT ON TABLE quota_restatements IS 'Changes of a past day''s reported figures between consecutive pulls';
COMMENT ON COLUMN quota_restatements.previous_cost_usd IS 'USD reported by the earlier pull (0 if it did not list the key)';
COMMENT ON COLUMN quota_restatements.new_cost_usd IS 'USD reported by the later pull (0 if it no longer lists the key)';
COMMENT ON COLUMN quota_restatements.delta_cost_usd IS 'new_cost_usd - previous_cost_usd';
COMMENT ON COLUMN quota_restatements.previous_pulled_at IS 'UTC time of the earlier pull';
COMMENT ON COLUMN quota_restatements.pulled_at IS 'UTC time of the pull that changed the figure';
COMMENT ON COLUMN quota_restatements.usage_date IS 'the past reporting day whose figure changed';
COMMENT ON COLUMN quota_restatements.key_name IS 'key display name';
COMMENT ON COLUMN quota_restatements.previous_requests IS 'requests reported by the earlier pull';
COMMENT ON COLUMN quota_restatements.new_requests IS 'requests reported by the later pull';
COMMENT ON COLUMN quota_restatements.pull_id IS 'the pull that changed the figure';

BEGIN TRANSACTION;
DELETE FROM quota_restatements WHERE usage_date BETWEEN $start AND $end;
INSERT INTO quota_restatements
WITH day_key AS (
    SELECT DISTINCT usage_date, key_name FROM stg_quota_daily
),
per_pull AS (
    SELECT
        p.usage_date,
        k.key_name,
        p.pull_id,
        p.pulled_at,
        coalesce(sum(d.reported_cost_usd), 0)::DECIMAL(18, 6) AS cost_usd,
        coalesce(sum(d.reported_requests), 0)::BIGINT AS requests
    FROM stg_quota_pulls AS p
    JOIN day_key AS k USING (usage_date)
    LEFT JOIN stg_quota_daily AS d
        ON d.usage_date = p.usage_date AND d.key_name = k.key_name AND d.pull_id = p.pull_id
    WHERE p.usage_date BETWEEN $start AND $end
    GROUP BY ALL
),
sequenced AS (
    SELECT
        *,
        lag(cost_usd) OVER w AS previous_cost_usd,
        lag(requests) OVER w AS previous_requests,
        lag(pulled_at) OVER w AS previous_pulled_at
    FROM per_pull
    WINDOW w AS (PARTITION BY usage_date, key_name ORDER BY pulled_at, pull_id)
)
SELECT
    usage_date, key_name, previous_cost_usd, cost_usd, (cost_usd - previous_cost_usd)::DECIMAL(18, 6),
    previous_requests, requests, previous_pulled_at, pulled_at, pull_id
FROM sequenced
WHERE previous_pulled_at IS NOT NULL
  AND (cost_usd <> previous_cost_usd OR requests <> previous_requests)
ORDER BY usage_date, key_name, pulled_at;
COMMIT;
