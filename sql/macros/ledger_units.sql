-- ledger_units(uncached, cached, cache_write, completion, model_ratio, completion_ratio, cache_ratio,
-- cache_creation_ratio, group_ratio): the quota units new-api bills a token-priced call, from the ratios
-- its ledger row says it applied (the one definition of the rule; stg_ledger_units calls it).
-- Upstream (QuantumNous/new-api service/text_quota.go, calculateTextQuotaSummary):
--   quota = (uncached + cached x cache_ratio + cache_write x cache_creation_ratio
--            + completion x completion_ratio) x model_ratio x group_ratio,
-- computed in exact decimals, rounded half away from zero to a whole unit (common/quota.go,
-- QuotaFromDecimalChecked: d.Round(0)), at least 1 unit when model_ratio x group_ratio is not 0, and 0
-- when the call used no tokens at all (hasBillableUsage). 500 000 units are 1 USD (QuotaPerUnit).
-- The ratios arrive as JSON numbers (DOUBLE). The product is computed in DOUBLE, which is exact to far
-- better than 1e-4 of a unit for any real call; only where it falls within 1e-4 of a half unit (where a
-- float error could move the rounding) is it recomputed exactly: each ratio taken at 8 decimals (every
-- ratio new-api ships has fewer), the product in HUGEINT (ledger_units_exact). Rare, so the check costs
-- a float product per row.
-- A token count > 0 whose ratio is NULL gives NULL (the units cannot be known); a count of 0 needs none.
-- Grain: scalar.
CREATE OR REPLACE TEMP MACRO ledger_ratio_e8(r) AS round(r * 100000000)::HUGEINT;
CREATE OR REPLACE TEMP MACRO ledger_units_exact(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                                cache_ratio, cache_creation_ratio, group_ratio) AS
    ((greatest(uncached, 0)::HUGEINT * 100000000
      + CASE WHEN cached > 0 THEN cached::HUGEINT * ledger_ratio_e8(cache_ratio) ELSE 0 END
      + CASE WHEN cache_write > 0 THEN cache_write::HUGEINT * ledger_ratio_e8(cache_creation_ratio) ELSE 0 END
      + CASE WHEN completion > 0 THEN completion::HUGEINT * ledger_ratio_e8(completion_ratio) ELSE 0 END)
     * ledger_ratio_e8(model_ratio) * ledger_ratio_e8(group_ratio)
     + '500000000000000000000000'::HUGEINT) // '1000000000000000000000000'::HUGEINT;
CREATE OR REPLACE TEMP MACRO ledger_units_float(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                                cache_ratio, cache_creation_ratio, group_ratio) AS
    (greatest(uncached, 0)::DOUBLE
     + CASE WHEN cached > 0 THEN cached * cache_ratio ELSE 0 END
     + CASE WHEN cache_write > 0 THEN cache_write * cache_creation_ratio ELSE 0 END
     + CASE WHEN completion > 0 THEN completion * completion_ratio ELSE 0 END) * model_ratio * group_ratio;
CREATE OR REPLACE TEMP MACRO ledger_units(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                          cache_ratio, cache_creation_ratio, group_ratio) AS
CASE
    WHEN model_ratio IS NULL OR group_ratio IS NULL OR (cached > 0 AND cache_ratio IS NULL)
         OR (cache_write > 0 AND cache_creation_ratio IS NULL) OR (completion > 0 AND completion_ratio IS NULL) THEN NULL
    WHEN coalesce(uncached, 0) + coalesce(cached, 0) + coalesce(cache_write, 0) + coalesce(completion, 0) = 0 THEN 0
    ELSE greatest(
        CASE WHEN model_ratio * group_ratio <> 0 THEN 1 ELSE 0 END,
        CASE WHEN abs(ledger_units_float(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                         cache_ratio, cache_creation_ratio, group_ratio) % 1 - 0.5) < 0.0001
             THEN ledger_units_exact(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                     cache_ratio, cache_creation_ratio, group_ratio)
             ELSE round(ledger_units_float(uncached, cached, cache_write, completion, model_ratio, completion_ratio,
                                           cache_ratio, cache_creation_ratio, group_ratio))::HUGEINT END)
END;
