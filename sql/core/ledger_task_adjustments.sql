-- ledger_task_adjustments: the refunds and late billing corrections CometAPI's ledger booked for a
-- task, each tied to the task's own charge when your logs hold the task's submit.
-- Grain: one ledger row that names a task (other.task_id) and is a refund (type 6) or a correction (a
-- type-2 correction, or a type-6 row carrying pre_consumed_quota: service/task_billing.go
-- RefundTaskQuota / RecalculateTaskQuota). Inputs: stg_gateway_rows, requests (every day: the task
-- may have been charged days, or a month, before). Parameters: $start, $end: the window rebuilt
-- (delete + insert by the day the ledger booked the row).
--
-- The link: the ledger names the task by the id the gateway answered its submit with, and only your
-- logs hold that reply (requests.task_id); the submit's own ledger row names no task. When several
-- logged requests carry the id, the earliest is the charge. A task charged on a day rebuilt after its
-- refund's day (its log arrived late) is linked when that day is rebuilt (the UPDATE below).
CREATE TABLE IF NOT EXISTS ledger_task_adjustments (
    usage_date DATE NOT NULL,
    booked_at TIMESTAMPTZ NOT NULL,
    ledger_row_id VARCHAR NOT NULL,
    key_name VARCHAR NOT NULL,
    model VARCHAR,
    kind VARCHAR NOT NULL,
    billed_usd DECIMAL(18, 6) NOT NULL,
    task_id VARCHAR NOT NULL,
    task_request_id VARCHAR,
    task_usage_date DATE,
    task_key_name VARCHAR,
    task_model VARCHAR
);
COMMENT ON TABLE ledger_task_adjustments IS 'One row per refund or late billing correction CometAPI''s ledger booked for a task (other.task_id), with the task''s own charge when your logs hold it';
COMMENT ON COLUMN ledger_task_adjustments.usage_date IS 'reporting day the ledger booked the refund or correction (COMET_LEDGER_TIMEZONE)';
COMMENT ON COLUMN ledger_task_adjustments.booked_at IS 'when the ledger booked it, UTC';
COMMENT ON COLUMN ledger_task_adjustments.ledger_row_id IS 'the ledger row''s identity (its request id, else the one the pipeline gives a row without one)';
COMMENT ON COLUMN ledger_task_adjustments.key_name IS 'key the ledger booked it on';
COMMENT ON COLUMN ledger_task_adjustments.model IS 'model as the ledger names it';
COMMENT ON COLUMN ledger_task_adjustments.kind IS 'refund (the task failed: its charge given back) or correction (its final price differed from the charge)';
COMMENT ON COLUMN ledger_task_adjustments.billed_usd IS 'signed effect on spend: refunds and lower final prices negative, higher final prices positive';
COMMENT ON COLUMN ledger_task_adjustments.task_id IS 'the task as the ledger names it (other.task_id): the id the gateway answered the task''s submit with';
COMMENT ON COLUMN ledger_task_adjustments.task_request_id IS 'the request that submitted the task (requests.task_id = task_id); NULL when your logs do not hold it';
COMMENT ON COLUMN ledger_task_adjustments.task_usage_date IS 'reporting day the task was charged; NULL when not linked';
COMMENT ON COLUMN ledger_task_adjustments.task_key_name IS 'key the task was charged on; NULL when not linked';
COMMENT ON COLUMN ledger_task_adjustments.task_model IS 'model the task was charged as; NULL when not linked';

BEGIN TRANSACTION;
DELETE FROM ledger_task_adjustments WHERE usage_date BETWEEN $start AND $end;
INSERT INTO ledger_task_adjustments
WITH adjustments AS (
    SELECT
        usage_date, created_at, request_id, key_name, model,
        CASE WHEN is_correction OR pre_consumed_quota IS NOT NULL THEN 'correction' ELSE 'refund' END AS kind,
        billed_usd, task_id
    FROM stg_gateway_rows
    WHERE task_id IS NOT NULL AND key_name IS NOT NULL
      AND (log_type = 6 OR (log_type = 2 AND is_correction))
),
tasks AS (
    SELECT task_id, request_id, usage_date, key_name, model
    FROM requests
    WHERE task_id IN (SELECT task_id FROM adjustments)
    QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY ts, request_id) = 1
)
SELECT
    a.usage_date, a.created_at, a.request_id, a.key_name, a.model, a.kind, a.billed_usd, a.task_id,
    t.request_id, t.usage_date, t.key_name, t.model
FROM adjustments AS a
LEFT JOIN tasks AS t USING (task_id)
ORDER BY a.usage_date, a.created_at, a.request_id;

-- a task whose charge is in this window, refunded or corrected on a day outside it
UPDATE ledger_task_adjustments AS a
SET task_request_id = t.request_id, task_usage_date = t.usage_date, task_key_name = t.key_name, task_model = t.model
FROM (
    SELECT task_id, request_id, usage_date, key_name, model
    FROM requests
    WHERE usage_date BETWEEN $start AND $end AND task_id IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY ts, request_id) = 1
) AS t
WHERE a.task_id = t.task_id AND a.usage_date NOT BETWEEN $start AND $end
  AND (a.task_request_id IS NULL OR t.usage_date < a.task_usage_date);
COMMIT;
