-- cli/flagged: the window's flagged key-days (is_flagged, recon_key_daily's one definition).
-- Grain: usage_date x key_name. Inputs: recon_key_daily.
-- Parameters: $first, $last (the reporting days of the window the command ran for).
SELECT usage_date, key_name, status, explanation FROM recon_key_daily
WHERE usage_date BETWEEN $first AND $last AND is_flagged
ORDER BY usage_date, key_name
