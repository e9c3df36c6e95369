-- cli/partial_days: days of the window that were not over when the warehouse built them (data so far).
-- Grain: usage_date. Inputs: recon_key_daily.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT DISTINCT usage_date FROM recon_key_daily WHERE is_partial_day
AND usage_date BETWEEN $first AND $last ORDER BY 1
