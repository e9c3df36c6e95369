-- pack/by_model: the month's requests, tokens and costs per model.
-- Grain: model. Inputs: cost_model_daily.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT model, mode(billing_category ORDER BY billing_category) AS billing_category, sum(requests)::BIGINT AS requests,
       sum(prompt_tokens)::BIGINT AS prompt_tokens, sum(completion_tokens)::BIGINT AS completion_tokens,
       sum(cached_tokens)::BIGINT AS cached_tokens, sum(reasoning_tokens)::BIGINT AS reasoning_tokens,
       sum(estimated_cost_usd) AS estimated_cost_usd, sum(allocated_cost_usd)::DECIMAL(18, 6) AS allocated_cost_usd
FROM cost_model_daily
WHERE usage_date BETWEEN $first AND $last
GROUP BY model
ORDER BY allocated_cost_usd DESC, model
