-- previews/requests: the first requests of the run's window, for the UI.
-- Grain: one request (10 at most). Inputs: requests.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, ts, key_name, model, prompt_tokens, completion_tokens,
       round(estimated_cost_usd, 6) AS estimated_cost_usd, billed_cost_usd, pricing_status, seen_in
FROM requests WHERE usage_date BETWEEN $start AND $end ORDER BY ts, request_id LIMIT 10
