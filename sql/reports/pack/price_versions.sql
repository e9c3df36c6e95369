-- pack/price_versions: every price version the month's requests were priced with, and what it priced.
-- Grain: price_version_id. Inputs: requests, prices.
-- Parameters: $first, $last (the month's first and last reporting days).
SELECT r.price_version_id, p.model, p.billing_category, p.input_usd_per_mtok, p.output_usd_per_mtok,
       p.cache_read_usd_per_mtok, p.cache_write_usd_per_mtok, p.per_call_usd, p.gateway_ratio,
       p.effective_from, p.effective_to, p.source,
       count(*) AS requests, sum(r.estimated_cost_usd) AS estimated_cost_usd
FROM requests AS r
JOIN prices AS p USING (price_version_id)
WHERE r.usage_date BETWEEN $first AND $last
GROUP BY ALL
ORDER BY p.model, p.effective_from, r.price_version_id
