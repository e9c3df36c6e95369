-- previews/anomalies: the run's findings, critical first, for the UI (findings without a day always show).
-- Grain: one finding (30 at most). Inputs: anomalies.
-- Parameters: $start, $end (the run's reporting days).
SELECT usage_date, key_name, kind, severity, detail FROM anomalies
WHERE usage_date BETWEEN $start AND $end OR usage_date IS NULL
ORDER BY severity = 'critical' DESC, usage_date, kind LIMIT 30
