-- Leaked-key signals: calls CometAPI billed that your logs do not hold, a key used from an address
-- it never used before, and spend spikes; critical first, newest first. `evidence` holds the IPs and
-- request ids, `action` what to do (rotating the key among them).
SELECT
    usage_date,
    key_name,
    kind,
    severity,
    round(amount_usd, 6) AS amount_usd,
    detail,
    evidence,
    action
FROM anomalies
WHERE kind IN ('unlogged_gateway_requests', 'new_source_ip', 'spend_spike')
ORDER BY severity = 'critical' DESC, usage_date DESC, key_name, kind;
