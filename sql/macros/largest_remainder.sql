-- largest_remainder_micros(rel): a key-day's amount spread over its models so that the parts add up to
-- the amount exactly, in micro-dollars (the one definition of the rule; cost_key_model_daily and the
-- FOCUS export's restated days both call it).
-- Input: a relation (table or CTE name) with usage_date, key_name, model, share (DOUBLE, a key-day's
-- shares summing to 1, or 0 for a model that gets nothing) and micros (the key-day's amount in
-- micro-dollars, HUGEINT, the same on every row of the key-day; NULL: nothing to spread).
-- Output: every input column, plus allocated_micros: each row's floor(|micros| x share) with the sign of
-- micros, and the micro-dollars that flooring leaves over handed out one each to the rows with the largest
-- fractions (ties by model), rows with no share excluded. NULL where micros is NULL.
-- Grain: that of the input (one row per input row).
CREATE OR REPLACE TEMP MACRO largest_remainder_micros(rel) AS TABLE
WITH floored AS (
    SELECT
        *,
        sign(micros) * floor(abs(micros) * share)::HUGEINT AS lr_base,
        abs(micros) * share - floor(abs(micros) * share) AS lr_fraction
    FROM query_table(rel)
),
ranked AS (
    SELECT
        *,
        micros - sum(lr_base) OVER (PARTITION BY usage_date, key_name) AS lr_leftover,
        row_number() OVER (PARTITION BY usage_date, key_name ORDER BY lr_fraction DESC, model) AS lr_place
    FROM floored
)
SELECT
    * EXCLUDE (lr_base, lr_fraction, lr_leftover, lr_place),
    lr_base + CASE WHEN lr_place <= abs(lr_leftover) AND share > 0 THEN sign(lr_leftover) ELSE 0 END
        AS allocated_micros
FROM ranked;
