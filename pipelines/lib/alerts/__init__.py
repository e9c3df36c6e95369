"""Alerts: what to tell the owner (conditions), the record that keeps it to once (the `alerts` table),
and how to reach them (Slack-compatible webhook, generic JSON webhook, e-mail).

- `config`: the channels, from the environment (`COMET_LEDGER_ALERT_*`);
- `conditions`: what is wrong now, read from the warehouse (budgets, anomalies, smoke tests);
- `channels`: one message to one channel, retried with backoff;
- `ledger`: the evaluation: conditions against the `alerts` table, notes claimed, sent, recorded.
"""
