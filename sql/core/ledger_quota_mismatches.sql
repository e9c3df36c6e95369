-- ledger_quota_mismatches: the token-billed ledger rows whose billed units differ from what their own
-- ratios give under upstream's rounding (sql/macros/ledger_units.sql), each with the reason; never hidden.
-- Grain: one gateway consume row. Input: stg_ledger_units (the window). Parameters: $start, $end: the
-- reporting days rebuilt (delete-then-insert). The rows checked, matched or not, are counted per
-- model and day in ledger_price_days (checked_requests, mismatched_requests, counted from this table:
-- built first, it is the only reader of the recomputed units).
CREATE TABLE IF NOT EXISTS ledger_quota_mismatches (
    request_id VARCHAR NOT NULL,
    usage_date DATE NOT NULL,
    key_name VARCHAR,
    model VARCHAR,
    quota_units BIGINT,
    expected_units HUGEINT,
    difference_units HUGEINT,
    reason VARCHAR NOT NULL,
    model_ratio DOUBLE,
    completion_ratio DOUBLE,
    cache_ratio DOUBLE,
    cache_creation_ratio DOUBLE,
    group_ratio DOUBLE
);
DELETE FROM ledger_quota_mismatches WHERE usage_date BETWEEN $start AND $end;
INSERT INTO ledger_quota_mismatches
SELECT request_id, usage_date, key_name, model, quota_units, expected_units,
       quota_units - expected_units AS difference_units, mismatch_reason,
       model_ratio, completion_ratio, cache_ratio, cache_creation_ratio, group_ratio
FROM stg_ledger_units
WHERE mismatch_reason IS NOT NULL
ORDER BY usage_date, request_id;
COMMENT ON TABLE ledger_quota_mismatches IS 'Token-billed ledger rows whose billed units differ from what their own ratios give (upstream rounding), with the reason';
COMMENT ON COLUMN ledger_quota_mismatches.request_id IS 'the ledger row (requests.request_id when seen by both sides)';
COMMENT ON COLUMN ledger_quota_mismatches.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN ledger_quota_mismatches.key_name IS 'the key billed';
COMMENT ON COLUMN ledger_quota_mismatches.model IS 'model as the ledger names it';
COMMENT ON COLUMN ledger_quota_mismatches.quota_units IS 'units billed (500 000 = 1 USD)';
COMMENT ON COLUMN ledger_quota_mismatches.expected_units IS 'units the row''s tokens and ratios give, rounded half away from zero, at least 1; NULL: a ratio is missing';
COMMENT ON COLUMN ledger_quota_mismatches.difference_units IS 'quota_units - expected_units';
COMMENT ON COLUMN ledger_quota_mismatches.model_ratio IS 'other.model_ratio of the row';
COMMENT ON COLUMN ledger_quota_mismatches.completion_ratio IS 'other.completion_ratio of the row';
COMMENT ON COLUMN ledger_quota_mismatches.cache_ratio IS 'other.cache_ratio of the row';
COMMENT ON COLUMN ledger_quota_mismatches.cache_creation_ratio IS 'other.cache_creation_ratio of the row';
COMMENT ON COLUMN ledger_quota_mismatches.group_ratio IS 'other.group_ratio of the row';
COMMENT ON COLUMN ledger_quota_mismatches.reason IS 'ratio_unreadable, unmodelled_price, ratio_missing, usage_estimated or formula_differs';
