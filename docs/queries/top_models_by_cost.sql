-- Top models by cost this month (the month of the latest reporting day): CometAPI's reported spend
-- allocated over models, so reported_usd adds up to the bill; estimated is tokens x your price table
-- (NULL for a model without a price: see unpriced_traffic.sql).
SELECT
    model,
    billing_category,
    sum(requests)::BIGINT AS requests,
    sum(prompt_tokens)::BIGINT AS prompt_tokens,
    sum(completion_tokens)::BIGINT AS completion_tokens,
    sum(allocated_cost_usd) AS reported_usd,
    round(sum(estimated_cost_usd), 6) AS estimated_usd,
    round(100 * sum(allocated_cost_usd) / sum(sum(allocated_cost_usd)) OVER (), 2) AS share_pct
FROM cost_model_daily
WHERE usage_date >= date_trunc('month', (SELECT max(usage_date) FROM quota_daily))::DATE
GROUP BY model, billing_category
ORDER BY reported_usd DESC, model
LIMIT 10;
