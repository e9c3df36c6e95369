-- pack/partial_days: days of the month that were not over when the warehouse built them.
-- Grain: usage_date. Inputs: recon_key_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT DISTINCT usage_date FROM recon_key_daily
WHERE is_partial_day AND usage_date BETWEEN $first AND $last
ORDER BY usage_date
