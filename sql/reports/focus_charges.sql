-- focus_charges: one month's charges in FOCUS 1.2 (the FinOps Open Cost and Usage Specification)
-- columns, which pipelines/lib/focus.py writes as reports/focus-YYYY-MM/ (Parquet and CSV).
-- A read-only query: it creates nothing. docs/focus.md maps every column to its source.
-- Grain: one charge, of one of four kinds (x_ChargeKind):
--   usage              key x model x reporting day of the month;
--   ledger_adjustment  key x model x reporting day: refunds and late billing corrections the gateway
--                      ledger booked that day (what it billed the model beyond the calls themselves),
--                      but for those of a task charged before the month;
--   ledger_correction  one ledger refund or correction booked this month of a task charged on a day
--                      of an earlier month (ledger_task_adjustments: the task's charge is known), at
--                      that day (FOCUS ChargeClass 'Correction');
--   restatement        key x restated day x pull: a query-service pull made this month that changed a
--                      day of an earlier month (FOCUS ChargeClass 'Correction').
-- Inputs: recon_key_daily, cost_key_model_daily, requests, ledger_task_adjustments, quota_restatements,
-- key_owners, balance_snapshots. Parameters: $first, $last (the month's reporting days), $starts_at, $ends_at
-- (the first instant of the month and the first after it, UTC), $timezone (COMET_LEDGER_TIMEZONE),
-- $partial (the month has not ended: every row says so in x_PartialMonth).
--
-- BilledCost, as the warehouse has it:
-- - a day the gateway ledger covers (recon_key_daily.billed_cost_usd is not NULL that day): what the
--   ledger billed. A usage row carries the model's calls (requests.billed_cost_usd); whatever else
--   the ledger booked for the model that day (refunds, corrections) is a ledger_adjustment row, so
--   that a key-day's rows add up to recon_key_daily.billed_cost_usd.
--   A ledger refund or correction of a task charged in an earlier month (ledger_task_adjustments
--   links it to the task's charge) is taken out of its ledger_adjustment row and is a
--   ledger_correction row of its own, so the key-day still adds up.
-- - any other day: the query service's figure for the key-day spread over models as
--   cost_key_model_daily spreads it (allocated_cost_usd).
-- - a key-day of this month that a pull after the month's end restated: its usage rows carry the
--   figure as it stood before (the month as delivered), spread in the proportions of
--   allocated_cost_usd by largest remainder in micro-dollars; the change is a restatement row in the
--   export of the month of that pull. A restatement pulled before the month ended is part of the
--   month's own figure (FOCUS: a correction within the current billing period is not a Correction).
-- ListCost = ContractedCost = EffectiveCost = BilledCost: CometAPI bills pay-as-you-go at its
-- published rates, with no negotiated rate, commitment or amortised purchase on the bill.
WITH
covered_days AS (
    SELECT usage_date, bool_or(billed_cost_usd IS NOT NULL) AS covered
    FROM recon_key_daily
    GROUP BY usage_date
),
-- what a row's requests were: on a covered day the ledger's calls (a request only your logs hold was
-- not billed), on any other day every request of the model
per_model AS (
    SELECT
        r.usage_date, r.key_name, r.model,
        min(r.priced_model) AS priced_model,
        min(r.price_version_id) AS price_version_id,
        count(*) AS requests,
        sum(r.total_tokens) AS total_tokens,
        sum(r.prompt_tokens) AS prompt_tokens,
        sum(r.completion_tokens) AS completion_tokens,
        sum(r.cached_tokens) AS cached_tokens,
        count(*) FILTER (WHERE r.total_tokens IS NULL AND r.billing_category IS DISTINCT FROM 'per_call')
            AS unknown_usage_requests,
        count(*) FILTER (WHERE r.pricing_status = 'unpriced') AS unpriced_requests,
        sum(r.estimated_cost_usd) AS estimated_cost_usd,
        coalesce(sum(r.billed_cost_usd), 0)::DECIMAL(18, 6) AS calls_billed_usd
    FROM requests AS r
    LEFT JOIN covered_days AS c USING (usage_date)
    WHERE r.usage_date BETWEEN $first AND $last
      AND (r.seen_in <> 'client' OR NOT coalesce(c.covered, false))
    GROUP BY r.usage_date, r.key_name, r.model
),
-- a ledger refund or correction booked this month of a task charged before the month
earlier_task_adjustments AS (
    SELECT a.*, r.billing_category, r.priced_model
    FROM ledger_task_adjustments AS a
    JOIN covered_days AS c ON c.usage_date = a.usage_date AND c.covered
    LEFT JOIN requests AS r ON r.usage_date = a.task_usage_date AND r.request_id = a.task_request_id
    WHERE a.usage_date BETWEEN $first AND $last AND a.task_usage_date < $first
),
moved_out AS (
    SELECT usage_date, key_name, model, sum(billed_usd) AS moved_usd
    FROM earlier_task_adjustments
    GROUP BY ALL
),
later_restatements AS (
    SELECT usage_date, key_name, sum(delta_cost_usd) AS later_delta_usd,
           sum(new_requests - previous_requests) AS later_delta_requests
    FROM quota_restatements
    WHERE usage_date BETWEEN $first AND $last AND pulled_at >= $ends_at
    GROUP BY usage_date, key_name
),
allocations AS (
    SELECT usage_date, key_name, model, billing_category, allocation_basis, allocated_cost_usd, billed_cost_usd
    FROM cost_key_model_daily
    WHERE usage_date BETWEEN $first AND $last
    UNION ALL
    -- a key-day a later pull removed altogether (the key missing from it) is in no allocation any more
    SELECT lr.usage_date, lr.key_name, '(unattributed)', NULL, 'unattributed', 0, NULL
    FROM later_restatements AS lr
    WHERE NOT EXISTS (SELECT 1 FROM cost_key_model_daily AS k
                      WHERE k.usage_date = lr.usage_date AND k.key_name = lr.key_name)
),
lines AS (
    SELECT
        k.usage_date, k.key_name, k.model, k.billing_category, k.allocation_basis,
        k.allocated_cost_usd, coalesce(k.billed_cost_usd, 0) AS ledger_billed_usd,
        coalesce(cd.covered, false) AS covered,
        p.priced_model, p.price_version_id, coalesce(p.requests, 0) AS requests,
        p.total_tokens, p.prompt_tokens, p.completion_tokens, p.cached_tokens,
        coalesce(p.unknown_usage_requests, 0) AS unknown_usage_requests,
        coalesce(p.unpriced_requests, 0) AS unpriced_requests,
        p.estimated_cost_usd, coalesce(p.calls_billed_usd, 0) AS calls_billed_usd,
        coalesce(m.moved_usd, 0) AS moved_usd,
        coalesce(q.reported_requests, 0) - coalesce(lr.later_delta_requests, 0) AS reported_requests,
        -- the key-day's figure as delivered with this month (micro-dollars); NULL: the warehouse's own allocation stands
        CASE WHEN NOT coalesce(cd.covered, false) AND coalesce(lr.later_delta_usd, 0) <> 0
             THEN ((coalesce(q.reported_cost_usd, 0) - lr.later_delta_usd) * 1000000)::HUGEINT END AS delivered_micros,
        sum(abs(k.allocated_cost_usd)) OVER kd AS allocated_total,
        sum(coalesce(p.requests, 0)) OVER kd AS requests_total,
        row_number() OVER (PARTITION BY k.usage_date, k.key_name ORDER BY k.model) AS model_place
    FROM allocations AS k
    LEFT JOIN per_model AS p USING (usage_date, key_name, model)
    LEFT JOIN recon_key_daily AS q USING (usage_date, key_name)
    LEFT JOIN later_restatements AS lr USING (usage_date, key_name)
    LEFT JOIN covered_days AS cd USING (usage_date)
    LEFT JOIN moved_out AS m USING (usage_date, key_name, model)
    WINDOW kd AS (PARTITION BY k.usage_date, k.key_name)
),
shared AS (
    SELECT
        *,
        CASE WHEN allocated_total > 0 THEN abs(allocated_cost_usd)::DOUBLE / allocated_total::DOUBLE
             WHEN requests_total > 0 THEN requests::DOUBLE / requests_total
             WHEN model_place = 1 THEN 1.0 ELSE 0.0 END AS share
    FROM lines
),
shared_micros AS (
    SELECT * RENAME (delivered_micros AS micros) FROM shared
),
spread AS (
    -- the delivered figure spread over the models by largest remainder (sql/macros/largest_remainder.sql)
    SELECT * RENAME (micros AS delivered_micros)
    FROM largest_remainder_micros(shared_micros)
),
charges AS (
    -- usage: one row per key x model x day with something billed or used
    SELECT
        'usage' AS kind, usage_date, key_name, model, billing_category, priced_model, price_version_id,
        requests, total_tokens, prompt_tokens, completion_tokens, cached_tokens, unknown_usage_requests,
        unpriced_requests, estimated_cost_usd, reported_requests, billed_usd,
        CASE WHEN covered THEN 'gateway_ledger' ELSE 'query_service' END AS cost_source,
        CASE WHEN covered THEN NULL ELSE allocation_basis END AS allocation_basis,
        NULL::DECIMAL(18, 6) AS previous_usd, NULL::DECIMAL(18, 6) AS new_usd, NULL::TIMESTAMPTZ AS restated_at,
        NULL::TIMESTAMPTZ AS booked_at, NULL::DATE AS booked_date, NULL::VARCHAR AS adjustment
    FROM (
        SELECT
            *,
            CASE WHEN covered THEN calls_billed_usd
                 WHEN delivered_micros IS NULL THEN allocated_cost_usd
                 ELSE (allocated_micros / 1000000.0)::DECIMAL(18, 6)
            END AS billed_usd
        FROM spread
    )
    WHERE requests > 0 OR billed_usd <> 0
    UNION ALL
    -- ledger_adjustment: what the ledger booked for the model that day beyond its calls, but for the
    -- ledger_correction rows below
    SELECT
        'ledger_adjustment', usage_date, key_name, model, billing_category, priced_model, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        (ledger_billed_usd - calls_billed_usd - moved_usd)::DECIMAL(18, 6), 'gateway_ledger', NULL, NULL, NULL, NULL,
        NULL, NULL, NULL
    FROM lines
    WHERE covered AND ledger_billed_usd - calls_billed_usd - moved_usd <> 0
    UNION ALL
    -- ledger_correction: a refund or correction booked this month of a task charged in an earlier one
    SELECT
        'ledger_correction', task_usage_date, key_name, model, billing_category, priced_model, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        billed_usd, 'gateway_ledger', NULL, NULL, NULL, NULL,
        booked_at, usage_date, kind
    FROM earlier_task_adjustments
    WHERE billed_usd <> 0
    UNION ALL
    -- restatement: a pull made this month that changed a day of an earlier month the ledger does not cover
    SELECT
        'restatement', q.usage_date, q.key_name, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        q.delta_cost_usd, 'query_service', NULL, q.previous_cost_usd, q.new_cost_usd, q.pulled_at,
        NULL, NULL, NULL
    FROM quota_restatements AS q
    LEFT JOIN covered_days AS c USING (usage_date)
    WHERE q.pulled_at >= $starts_at AND q.pulled_at < $ends_at AND q.usage_date < $first
      AND q.delta_cost_usd <> 0 AND NOT coalesce(c.covered, false)
),
account AS (
    -- the CometAPI account: the first snapshot taken from the month's start on, else the latest before
    SELECT coalesce(
        (SELECT arg_min(username, (fetched_at, snapshot_id)) FROM balance_snapshots WHERE fetched_at >= $starts_at),
        (SELECT arg_max(username, (fetched_at, snapshot_id)) FROM balance_snapshots)) AS username
),
described AS (
    SELECT
        c.*,
        o.team, o.project, o.cost_center,
        CASE WHEN c.kind <> 'usage' THEN NULL
             WHEN c.billing_category = 'per_call' THEN 'Calls'
             WHEN c.total_tokens IS NOT NULL THEN 'Tokens'
             ELSE 'Requests' END AS consumed_unit
    FROM charges AS c
    LEFT JOIN key_owners AS o
        ON o.key_name = c.key_name AND o.effective_from <= c.usage_date
       AND (o.effective_to IS NULL OR c.usage_date < o.effective_to)
)
SELECT
    d.billed_usd AS "BilledCost",
    a.username AS "BillingAccountId",
    a.username AS "BillingAccountName",
    'USD' AS "BillingCurrency",
    $ends_at::TIMESTAMPTZ AS "BillingPeriodEnd",
    $starts_at::TIMESTAMPTZ AS "BillingPeriodStart",
    CASE WHEN d.kind = 'ledger_adjustment' THEN 'Adjustment' ELSE 'Usage' END AS "ChargeCategory",
    CASE WHEN d.kind IN ('restatement', 'ledger_correction') THEN 'Correction' END AS "ChargeClass",
    CASE d.kind
        WHEN 'usage' THEN
            CASE WHEN d.model = '(unattributed)'
                 THEN printf('CometAPI usage on key %s that neither your logs nor the ledger attribute to a model: '
                             'the query service''s figure for the key-day', d.key_name)
                 ELSE printf('%s on key %s: %d request%s, %s', d.model, d.key_name, d.requests,
                             CASE WHEN d.requests = 1 THEN '' ELSE 's' END,
                             CASE WHEN d.cost_source = 'gateway_ledger' THEN 'as billed in CometAPI''s ledger'
                                  ELSE printf('the query service''s figure for the key-day allocated by %s',
                                              replace(d.allocation_basis, '_', ' ')) END) END
        WHEN 'ledger_adjustment' THEN
            printf('refunds and late billing corrections CometAPI''s ledger booked for %s on key %s', d.model, d.key_name)
        WHEN 'ledger_correction' THEN
            printf('%s of a %s task on key %s charged on %s, booked by CometAPI''s ledger on %s',
                   CASE d.adjustment WHEN 'refund' THEN 'refund' ELSE 'late price correction' END, d.model,
                   d.key_name, strftime(d.usage_date, '%Y-%m-%d'), strftime(d.booked_date, '%Y-%m-%d'))
        ELSE printf('restatement of key %s on %s by a query-service pull on %s: $%.6f -> $%.6f', d.key_name,
                    strftime(d.usage_date, '%Y-%m-%d'), strftime(timezone($timezone, d.restated_at), '%Y-%m-%d'),
                    d.previous_usd, d.new_usd)
    END AS "ChargeDescription",
    'Usage-Based' AS "ChargeFrequency",
    timezone($timezone, (d.usage_date + 1)::TIMESTAMP) AS "ChargePeriodEnd",
    timezone($timezone, d.usage_date::TIMESTAMP) AS "ChargePeriodStart",
    NULL::VARCHAR AS "CommitmentDiscountStatus",
    CASE d.consumed_unit
        WHEN 'Calls' THEN d.requests
        WHEN 'Tokens' THEN d.total_tokens
        WHEN 'Requests' THEN CASE WHEN d.model = '(unattributed)' THEN d.reported_requests ELSE d.requests END
    END::DECIMAL(24, 6) AS "ConsumedQuantity",
    d.consumed_unit AS "ConsumedUnit",
    d.billed_usd AS "ContractedCost",
    d.billed_usd AS "EffectiveCost",
    NULL::VARCHAR AS "InvoiceId",
    'CometAPI' AS "InvoiceIssuerName",
    d.billed_usd AS "ListCost",
    CASE WHEN d.kind = 'usage' THEN 'Standard' END AS "PricingCategory",
    CASE d.consumed_unit
        WHEN 'Calls' THEN d.requests
        WHEN 'Tokens' THEN d.total_tokens / 1000000
        WHEN 'Requests' THEN CASE WHEN d.model = '(unattributed)' THEN d.reported_requests ELSE d.requests END
    END::DECIMAL(24, 6) AS "PricingQuantity",
    CASE d.consumed_unit WHEN 'Tokens' THEN '1000000 Tokens' ELSE d.consumed_unit END AS "PricingUnit",
    'CometAPI' AS "ProviderName",
    'CometAPI' AS "PublisherName",
    'AI and Machine Learning' AS "ServiceCategory",
    'CometAPI' AS "ServiceName",
    'Generative AI' AS "ServiceSubcategory",
    CASE WHEN d.model IS NOT NULL AND d.model <> '(unattributed)' THEN coalesce(d.priced_model, d.model) END AS "SkuId",
    d.price_version_id AS "SkuPriceId",
    d.key_name AS "SubAccountId",
    d.key_name AS "SubAccountName",
    CASE WHEN coalesce(d.team, d.project, d.cost_center) IS NOT NULL
         THEN to_json(map_from_entries(list_filter(
                  [{'k': 'team', 'v': d.team}, {'k': 'project', 'v': d.project}, {'k': 'cost_center', 'v': d.cost_center}],
                  lambda e: e.v IS NOT NULL)))::VARCHAR END AS "Tags",
    d.allocation_basis AS "x_AllocationBasis",
    d.billing_category AS "x_BillingCategory",
    d.booked_at AS "x_BookedAt",
    d.cached_tokens AS "x_CachedTokens",
    d.kind AS "x_ChargeKind",
    d.completion_tokens AS "x_CompletionTokens",
    d.cost_source AS "x_CostSource",
    d.estimated_cost_usd AS "x_EstimatedCost",
    d.model AS "x_Model",
    $partial::BOOLEAN AS "x_PartialMonth",
    d.prompt_tokens AS "x_PromptTokens",
    d.requests AS "x_Requests",
    d.restated_at AS "x_RestatedAt",
    coalesce(d.team, 'unassigned') AS "x_Team",
    d.unknown_usage_requests AS "x_UnknownUsageRequests",
    d.unpriced_requests AS "x_UnpricedRequests"
FROM described AS d
CROSS JOIN account AS a
ORDER BY d.usage_date, d.key_name, d.model NULLS LAST,
         CASE d.kind WHEN 'usage' THEN 0 WHEN 'ledger_adjustment' THEN 1 WHEN 'ledger_correction' THEN 2 ELSE 3 END,
         d.restated_at, d.booked_at, d.adjustment, d.billed_usd
