-- previews/smoke_tests: the latest smoke-test records, for the UI.
-- Grain: one smoke test (10 at most). Inputs: smoke_tests.
-- Parameters: none.
SELECT checked_at, smoke_test_date, query_key_name, query_date_range, passed, reviewer
FROM smoke_tests ORDER BY checked_at DESC LIMIT 10
