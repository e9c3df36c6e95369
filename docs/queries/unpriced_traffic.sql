-- Unpriced traffic: requests your price table cannot estimate (no price for the model on that day,
-- or a token kind without a price), per model and key. Add the rows to config/prices.csv, then
-- `comet-ledger reprice --dry-run` shows what changes.
SELECT
    model,
    key_name,
    pricing_status,
    count(*) AS requests,
    min(usage_date) AS first_day,
    max(usage_date) AS last_day,
    sum(prompt_tokens)::BIGINT AS prompt_tokens,
    sum(completion_tokens)::BIGINT AS completion_tokens,
    sum(billed_cost_usd) AS billed_usd
FROM requests
WHERE pricing_status IN ('unpriced', 'missing_price')
GROUP BY model, key_name, pricing_status
ORDER BY billed_usd DESC NULLS LAST, requests DESC, model, key_name;
