-- key_owners: who owns each key, effective-dated (keys are renamed and reassigned).
-- Grain: key_name × period. Input: the registered table key_owners_input (COMET_LEDGER_KEY_OWNERS).
CREATE OR REPLACE TABLE key_owners AS
SELECT key_name, team, project, cost_center, effective_from, effective_to
FROM key_owners_input
ORDER BY key_name, effective_from;
COMMENT ON TABLE key_owners IS 'Key name -> team, project, cost centre, effective-dated (config/key_owners.csv)';
COMMENT ON COLUMN key_owners.effective_from IS 'first reporting day of the assignment (inclusive)';
COMMENT ON COLUMN key_owners.effective_to IS 'first reporting day after it (exclusive); NULL: current';
COMMENT ON COLUMN key_owners.key_name IS 'key display name as CometAPI reports it';
COMMENT ON COLUMN key_owners.team IS 'team charged for the key';
COMMENT ON COLUMN key_owners.project IS 'project (optional)';
COMMENT ON COLUMN key_owners.cost_center IS 'cost centre (optional)';
