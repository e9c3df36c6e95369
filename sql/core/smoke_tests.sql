-- smoke_tests: one row per smoke test run (pipelines/lib/smoke_test.py), the seed article's pass/fail
-- fields plus the verdict. Append-only: the table is created when missing and never rebuilt, so the
-- history of runs survives every warehouse build. Grain: one smoke test. Input: bound $parameters.
CREATE TABLE IF NOT EXISTS smoke_tests (
    smoke_test_date DATE NOT NULL,
    query_key_name VARCHAR,
    query_date_range VARCHAR NOT NULL,
    total_quota_returned DOUBLE,
    total_used_quota_returned DOUBLE,
    request_count_returned BIGINT,
    daily_quota_dates_present BOOLEAN NOT NULL,
    sample_chat_total_tokens BIGINT,
    usage_field_present BOOLEAN,
    date_range_filter_working BOOLEAN NOT NULL,
    error_path_returned_error BOOLEAN NOT NULL,
    reviewer VARCHAR,
    passed BOOLEAN NOT NULL,
    failures VARCHAR,
    warnings VARCHAR,
    checked_at TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE smoke_tests IS 'One row per smoke test of the CometAPI services (seed article happy and error paths); a failed test means the numbers must not be trusted for a review. Token counts, USD figures, uptime and latency are deliberately not asserted';
COMMENT ON COLUMN smoke_tests.smoke_test_date IS 'reporting day the smoke test ran (COMET_LEDGER_TIMEZONE)';
COMMENT ON COLUMN smoke_tests.query_key_name IS 'name of the query key, from /api/usage/token; NULL when that endpoint did not answer (see warnings)';
COMMENT ON COLUMN smoke_tests.query_date_range IS 'the date range with known activity that was queried, start..end inclusive';
COMMENT ON COLUMN smoke_tests.total_quota_returned IS 'total_quota (current remaining balance, USD) answered by /user/quota without dates; NULL when not answered';
COMMENT ON COLUMN smoke_tests.total_used_quota_returned IS 'total_used_quota (lifetime spend, USD) answered by /user/quota; NULL when not answered';
COMMENT ON COLUMN smoke_tests.request_count_returned IS 'request_count (lifetime requests, all keys) answered by /user/quota; NULL when not answered';
COMMENT ON COLUMN smoke_tests.daily_quota_dates_present IS 'the known-activity range answered daily_quota with at least one date';
COMMENT ON COLUMN smoke_tests.sample_chat_total_tokens IS 'usage.total_tokens of the one minimal chat completion; NULL when no chat was asked for (--chat) or none was returned';
COMMENT ON COLUMN smoke_tests.usage_field_present IS 'the chat completion carried integer prompt/completion/total tokens with total = prompt + completion; NULL when no chat was asked for';
COMMENT ON COLUMN smoke_tests.date_range_filter_working IS 'a range outside any activity (2001-01-01..2001-01-07) answered an absent or empty daily_quota';
COMMENT ON COLUMN smoke_tests.error_path_returned_error IS 'the malformed date 2026/06/01 was answered with an error (false: accepted silently, or not checked)';
COMMENT ON COLUMN smoke_tests.reviewer IS 'who ran the smoke test, as given; NULL when not given';
COMMENT ON COLUMN smoke_tests.passed IS 'true when every required check passed (warnings do not fail a test)';
COMMENT ON COLUMN smoke_tests.failures IS 'why the test failed, one line per failed check (newline-separated); NULL when it passed';
COMMENT ON COLUMN smoke_tests.warnings IS 'warnings, one line each (newline-separated), e.g. a query key that can spend money; NULL when none';
COMMENT ON COLUMN smoke_tests.checked_at IS 'UTC time the smoke test finished';
INSERT INTO smoke_tests (
    smoke_test_date, query_key_name, query_date_range, total_quota_returned, total_used_quota_returned,
    request_count_returned, daily_quota_dates_present, sample_chat_total_tokens, usage_field_present,
    date_range_filter_working, error_path_returned_error, reviewer, passed, failures, warnings, checked_at
)
VALUES (
    $smoke_test_date::DATE,
    $query_key_name::VARCHAR,
    $query_date_range::VARCHAR,
    $total_quota_returned::DOUBLE,
    $total_used_quota_returned::DOUBLE,
    $request_count_returned::BIGINT,
    $daily_quota_dates_present::BOOLEAN,
    $sample_chat_total_tokens::BIGINT,
    $usage_field_present::BOOLEAN,
    $date_range_filter_working::BOOLEAN,
    $error_path_returned_error::BOOLEAN,
    $reviewer::VARCHAR,
    $passed::BOOLEAN,
    $failures::VARCHAR,
    $warnings::VARCHAR,
    $checked_at::TIMESTAMPTZ
);
