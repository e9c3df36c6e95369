-- pack/price_changes: the price changes the gateway ledger shows (anomalies of kind price_change,
-- sql/marts/anomalies.sql), with the spend each affects.
-- Grain: one price change (usage_date, evidence). Inputs: anomalies. Parameters: $first, $last (the month's
-- first and last reporting days).
SELECT usage_date, detail, amount_usd, evidence
FROM anomalies
WHERE kind = 'price_change' AND usage_date BETWEEN $first AND $last
ORDER BY usage_date, evidence
