-- previews/quota_duplicates: key-days quota_daily would hold twice (the one_row_per_key_day check: must be 0).
-- Grain: one row (the count). Inputs: quota_daily.
-- Parameters: none.
SELECT count(*) FROM (SELECT usage_date, key_name FROM quota_daily GROUP BY ALL HAVING count(*) > 1)
