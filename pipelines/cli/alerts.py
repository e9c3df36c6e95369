"""`comet-ledger alerts test` and `comet-ledger alerts check`: a test message to every configured
alert channel, and by hand what the alert sensors do after every run.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.lib.settings import ConfigError, Settings


def cmd_alerts_test(args: argparse.Namespace, settings: Settings) -> int:
    import socket

    from pipelines.lib.alerts.channels import LABELS, Sender, send_test

    sender = Sender(settings.alerts)
    if not sender.channels:
        raise ConfigError("no alert channel is configured: set COMET_LEDGER_ALERT_SLACK_URL, "
                          "COMET_LEDGER_ALERT_WEBHOOK_URL or COMET_LEDGER_ALERT_SMTP_HOST (README.md, Alerts)")
    results = send_test(sender, host=socket.gethostname())
    for d in results:
        print(f"{LABELS[d.channel]}: " + (f"sent ({d.attempts} attempt(s))" if d.ok
                                           else f"FAILED after {d.attempts} attempt(s): {d.error}"))
    return 0 if all(d.ok for d in results) else 1


def cmd_alerts_check(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines import runs
    from pipelines.defs.alerts.sources import instance_conditions
    from pipelines.lib import clock
    from pipelines.lib.alerts.channels import LABELS, Sender
    from pipelines.lib.alerts.ledger import evaluate

    sender = Sender(settings.alerts)
    if not sender.channels:
        print("no alert channel is configured: alerts are recorded in the warehouse's alerts table only",
              file=sys.stderr)
    found = instance_conditions(runs.instance_for(settings), settings.timezone, settings.secrets())
    outcome = evaluate(settings.warehouse_path, sender, clock.now(), found)
    for label, alerts in (("opened", outcome.opened), ("resolved", outcome.resolved), ("expired", outcome.expired)):
        for alert in alerts:
            print(f"{label:<8}  {alert.severity:<8}  {alert.summary}")
    for alert_id, note, delivery in outcome.failed:
        print(f"not delivered: {note} note of alert {alert_id} to {LABELS.get(delivery.channel, delivery.channel)}: "
              f"{delivery.error}", file=sys.stderr)
    print(outcome.summary())
    return 1 if outcome.failed else 0
