-- previews/key_owners: the key owners as loaded, for the UI.
-- Grain: key_name x effective_from. Inputs: key_owners.
-- Parameters: none.
SELECT key_name, team, project, cost_center, effective_from, effective_to
FROM key_owners ORDER BY key_name, effective_from
