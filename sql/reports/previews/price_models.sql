-- previews/price_models: how many models the price table prices.
-- Grain: one row (the table). Inputs: prices.
-- Parameters: none.
SELECT count(DISTINCT model) FROM prices
