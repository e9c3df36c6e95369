-- budgets: the budgets from COMET_LEDGER_BUDGETS (config/budgets.csv), validated on load
-- (pipelines/lib/reconciliation/budgets.py). Grain: budget row (budget_id x effective_from). Input: the registered
-- table budgets_input. effective_from is inclusive, effective_to exclusive (NULL: in force); both are
-- reporting days on the period's boundaries, so every period is governed by exactly one row.
CREATE OR REPLACE TABLE budgets AS
SELECT budget_id, scope, name, period, amount_usd, thresholds_pct, effective_from, effective_to
FROM budgets_input
ORDER BY budget_id, effective_from;
COMMENT ON TABLE budgets IS 'Spend budgets per account, team or key and day, week or month (config/budgets.csv)';
COMMENT ON COLUMN budgets.budget_id IS 'scope, name and period, e.g. team:team-a/month or account/month: the rows of one budget over time share it';
COMMENT ON COLUMN budgets.scope IS 'account (all reported spend), team (the keys the team owns each day, key_owners) or key (one key name)';
COMMENT ON COLUMN budgets.name IS 'team or key name; NULL for the account';
COMMENT ON COLUMN budgets.period IS 'day, week (Monday to Sunday) or month, in reporting days of COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN budgets.amount_usd IS 'the budget for one period, USD';
COMMENT ON COLUMN budgets.thresholds_pct IS 'percentages of the amount that warn, increasing (default [100])';
COMMENT ON COLUMN budgets.effective_from IS 'first reporting day the row governs (inclusive), the first day of a period';
COMMENT ON COLUMN budgets.effective_to IS 'first reporting day it no longer governs (exclusive); NULL: in force';
