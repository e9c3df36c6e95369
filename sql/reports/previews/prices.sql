-- previews/prices: the price table as loaded, for the UI.
-- Grain: price version. Inputs: prices.
-- Parameters: none.
SELECT model, source, billing_category, input_usd_per_mtok, output_usd_per_mtok, per_call_usd, gateway_ratio, effective_from,
       effective_to
FROM prices ORDER BY model, effective_from
