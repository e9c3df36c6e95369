-- key_ip_daily: which source IPs used each key on each reporting day, and how much.
-- Grain: usage_date x key_name x source_ip. Input: requests (requests without a key or an IP are
-- left out). Parameters: $start, $end: the window rebuilt (delete + insert).
--
-- anomalies (new_source_ip) judges a day's addresses against every earlier day's: this small table
-- is that history, so a run reads the requests of its own days only, however long the history is.
CREATE TABLE IF NOT EXISTS key_ip_daily (
    usage_date DATE NOT NULL,
    key_name VARCHAR NOT NULL,
    source_ip VARCHAR NOT NULL,
    requests BIGINT NOT NULL,
    unlogged_requests BIGINT NOT NULL,
    cost_usd DOUBLE
);
COMMENT ON TABLE key_ip_daily IS 'Source IPs per key and reporting day, with their requests and cost (from requests)';
COMMENT ON COLUMN key_ip_daily.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN key_ip_daily.key_name IS 'key display name';
COMMENT ON COLUMN key_ip_daily.source_ip IS 'caller IP (client log, else gateway ledger)';
COMMENT ON COLUMN key_ip_daily.requests IS 'requests from the IP on the key that day';
COMMENT ON COLUMN key_ip_daily.unlogged_requests IS 'of which billed by CometAPI but missing from your logs';
COMMENT ON COLUMN key_ip_daily.cost_usd IS 'billed USD, else estimated, of those requests (NULL when neither is known)';

BEGIN TRANSACTION;
DELETE FROM key_ip_daily WHERE usage_date BETWEEN $start AND $end;
INSERT INTO key_ip_daily
SELECT
    usage_date, key_name, source_ip,
    count(*) AS requests,
    count(*) FILTER (WHERE seen_in = 'gateway') AS unlogged_requests,
    sum(coalesce(billed_cost_usd::DOUBLE, estimated_cost_usd)) AS cost_usd
FROM requests
WHERE usage_date BETWEEN $start AND $end AND key_name IS NOT NULL AND source_ip IS NOT NULL
GROUP BY ALL
ORDER BY ALL;
COMMIT;
