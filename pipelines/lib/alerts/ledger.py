"""The evaluation: conditions against the `alerts` table, then the notes sent, then the outcome recorded.

`evaluate()` is what the alert sensors and `comet-ledger alerts check` run:

1. **Plan** (read-only): the warehouse's conditions (`conditions.warehouse_conditions`) plus those
   the caller found elsewhere (the Dagster instance's failed runs and freshness checks), against the
   alerts on record. A condition with no alert of its kind, scope, threshold and period opens one; an
   incident (`conditions.INCIDENT_KINDS`) also continues an open alert of its kind and scope. An open
   alert whose condition no longer holds is `resolved` (a note follows), or `expired` when its period
   is over (a budget period that ended, a finding older than the look-back: no note). Only kinds the
   evaluation judged are closed. Every configured channel gets one `opened` note per open alert and one
   `resolved` note per resolved alert it was told about. Nothing to do: nothing is written.
2. **Claim**, in one `warehouse.publish()` (under the writer lock, published atomically): the plan is
   redone on the private copy, the alerts are written, and the notes to send are claimed by this
   evaluation, so a concurrent one neither opens the same alert nor sends the same note.
3. **Send**, outside the lock (a channel that is down must not hold up the pipeline's writers): each
   note with retries and backoff (`channels.Sender`). A channel that fails a note is not tried again
   in this evaluation; its notes wait for the next one.
4. **Record**, in a second publish: sent, or pending another try (up to `MAX_ROUNDS` evaluations, then
   `failed`), with the error. A crash between 2 and 4 leaves the claims; after `CLAIM_TTL` the next
   evaluation takes them over and sends again (at least once, never lost).

Nothing here raises for a channel that fails; the outcome says what happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from pipelines.lib import clock
from pipelines.lib.alerts.channels import Delivery, Message, Sender
from pipelines.lib.alerts.conditions import (ANOMALY_KINDS, BUDGET_KINDS, INCIDENT_KINDS, LOOKBACK_DAYS, Judgement,
                                             warehouse_conditions)
from pipelines.lib.warehouse import publish, relation_exists, run_model

MODEL = "alerts"  # sql/core/alerts.sql: alerts and alert_deliveries
MAX_ROUNDS = 3
CLAIM_TTL = timedelta(minutes=15)


@dataclass(frozen=True)
class Alert:
    """An alert on record (a row of `alerts`)."""

    alert_id: str
    kind: str
    scope: str
    threshold_pct: float | None
    period_start: date
    period_end: date | None
    severity: str
    summary: str
    detail: str
    status: str
    opened_at: datetime
    resolved_at: datetime | None = None

    def message(self, note: str) -> Message:
        return Message(event=note, summary=self.summary, detail=self.detail, severity=self.severity,
                       alert_id=self.alert_id, kind=self.kind, scope=self.scope, period_start=self.period_start,
                       period_end=self.period_end, threshold_pct=self.threshold_pct, opened_at=self.opened_at,
                       resolved_at=self.resolved_at)


@dataclass
class Plan:
    opened: list[Alert] = field(default_factory=list)
    closed: list[Alert] = field(default_factory=list)  # status resolved or expired, resolved_at set
    new_notes: list[tuple[str, str, str]] = field(default_factory=list)  # (alert_id, note, channel)
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)  # (..., reason)
    retry: list[tuple[str, str, str]] = field(default_factory=list)  # pending notes to take over

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed or self.new_notes or self.skipped or self.retry)


@dataclass
class Outcome:
    """What one evaluation did."""

    opened: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    expired: list[Alert] = field(default_factory=list)
    deliveries: list[tuple[str, str, Delivery]] = field(default_factory=list)  # (alert_id, note, delivery)

    @property
    def failed(self) -> list[tuple[str, str, Delivery]]:
        return [d for d in self.deliveries if not d[2].ok]

    def summary(self) -> str:
        sent = sum(1 for *_, d in self.deliveries if d.ok)
        return (f"{len(self.opened)} alert(s) opened, {len(self.resolved)} resolved, {len(self.expired)} expired; "
                f"{sent} note(s) sent, {len(self.failed)} failed")


def evaluate(warehouse_path: Path, sender: Sender, now: datetime, found: Judgement = Judgement(), *,
             lock_timeout_s: float = 3600.0) -> Outcome:
    """Steps 1-4 of the module docstring; `found`: conditions from outside the warehouse;
    `lock_timeout_s`: how long to wait for the warehouse's writer (TimeoutError after it)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (clock.now())")
    channels = sender.channels
    if warehouse_path.exists():
        with duckdb.connect(str(warehouse_path), read_only=True) as con:
            if not plan(con, found + warehouse_conditions(con), channels, now):
                return Outcome()
    elif not any(c.opens for c in found.conditions):
        return Outcome()
    token = uuid.uuid4().hex
    with publish(warehouse_path, lock_timeout_s) as con:
        run_model(con, MODEL, {})
        todo = plan(con, found + warehouse_conditions(con), channels, now)
        apply(con, todo, token, now)
        outbox = claimed(con, token)
    outcome = Outcome(opened=todo.opened, resolved=[a for a in todo.closed if a.status == "resolved"],
                      expired=[a for a in todo.closed if a.status == "expired"])
    if not outbox:
        return outcome
    down: dict[str, str] = {}
    for alert, note, channel in outbox:
        if channel in down:
            outcome.deliveries.append((alert.alert_id, note, Delivery(channel, False, 0, down[channel])))
            continue
        delivery = sender.send(channel, alert.message(note))
        outcome.deliveries.append((alert.alert_id, note, delivery))
        if not delivery.ok:
            down[channel] = f"not tried: {delivery.error}"
    with publish(warehouse_path, lock_timeout_s) as con:
        record(con, token, outcome.deliveries, clock.now())
    return outcome


# --- 1. plan --------------------------------------------------------------------------------------

def on_record(con: duckdb.DuckDBPyConnection, *, open_only: bool = True) -> list[Alert]:
    """The alerts on record (only the open ones when `open_only`), by id."""
    if not relation_exists(con, "alerts"):
        return []
    rows = con.execute("SELECT alert_id, kind, scope, threshold_pct, period_start, period_end, severity, summary, "
                       "detail, status, opened_at, resolved_at FROM alerts WHERE status = 'open' OR NOT $open_only "
                       "ORDER BY alert_id", {"open_only": open_only}).fetchall()
    return [Alert(*row) for row in rows]


def plan(con: duckdb.DuckDBPyConnection, found: Judgement, channels: list[str], now: datetime) -> Plan:
    todo = Plan()
    recorded = {a.alert_id for a in on_record(con, open_only=False)}
    open_alerts = on_record(con)
    continuing = {(a.kind, a.scope): a for a in open_alerts if a.kind in INCIDENT_KINDS}
    holding: set[str] = set()
    for condition in found.conditions:
        ongoing = continuing.get((condition.kind, condition.scope)) if condition.incident else None
        if ongoing is not None:
            holding.add(ongoing.alert_id)
        elif condition.alert_id in recorded:
            holding.add(condition.alert_id)
        elif condition.opens:
            alert = Alert(condition.alert_id, condition.kind, condition.scope, condition.threshold_pct,
                          condition.period_start, condition.period_end, condition.severity, condition.summary,
                          condition.detail, "open", now)
            todo.opened.append(alert)
            recorded.add(alert.alert_id)
            holding.add(alert.alert_id)
    for alert in open_alerts:
        if alert.alert_id in holding or alert.kind not in found.judged:
            continue
        status = _closes_as(alert, found.as_of)
        if status is not None:
            todo.closed.append(Alert(**{**alert.__dict__, "status": status, "resolved_at": now}))
    _plan_notes(con, todo, open_alerts, channels, now)
    return todo


def _closes_as(alert: Alert, as_of: date | None) -> str | None:
    """resolved (the condition cleared within its period) or expired (its period is over); None: not judged."""
    if alert.kind in BUDGET_KINDS:
        if as_of is None:
            return None
        return "resolved" if alert.period_end is None or alert.period_end >= as_of else "expired"
    if alert.kind in ANOMALY_KINDS:
        if as_of is None:
            return None
        return "resolved" if alert.period_start > as_of - timedelta(days=LOOKBACK_DAYS) else "expired"
    return "resolved"


def _plan_notes(con: duckdb.DuckDBPyConnection, todo: Plan, open_alerts: list[Alert], channels: list[str],
                now: datetime) -> None:
    notes = {}
    if relation_exists(con, "alert_deliveries"):
        for alert_id, note, channel, status, claimed_by, claimed_at in con.execute(
                "SELECT alert_id, note, channel, status, claimed_by, claimed_at FROM alert_deliveries").fetchall():
            notes[(alert_id, note, channel)] = (status, claimed_by, claimed_at)
    closed = {a.alert_id: a for a in todo.closed}
    still_open = [a for a in [*open_alerts, *todo.opened] if a.alert_id not in closed]
    for alert in still_open:
        for channel in channels:
            if (alert.alert_id, "opened", channel) not in notes:
                todo.new_notes.append((alert.alert_id, "opened", channel))
    for alert in closed.values():
        for channel in channels:
            told = notes.get((alert.alert_id, "opened", channel))
            if told is not None and told[0] == "sent" and alert.status == "resolved":
                todo.new_notes.append((alert.alert_id, "resolved", channel))
    for (alert_id, note, channel), (status, claimed_by, claimed_at) in notes.items():
        if status != "pending":
            continue
        if alert_id in closed and note == "opened":
            todo.skipped.append((alert_id, note, channel, "the condition cleared before the note was sent"))
        elif channel not in channels:
            todo.skipped.append((alert_id, note, channel, "the channel is no longer configured"))
        elif claimed_by is None or claimed_at < now - CLAIM_TTL:
            todo.retry.append((alert_id, note, channel))


# --- 2. claim -------------------------------------------------------------------------------------

def apply(con: duckdb.DuckDBPyConnection, todo: Plan, token: str, now: datetime) -> None:
    for a in todo.opened:
        con.execute("INSERT INTO alerts (alert_id, kind, scope, threshold_pct, period_start, period_end, severity, "
                    "summary, detail, status, opened_at) VALUES ($id, $kind, $scope, $threshold, $start, $end, "
                    "$severity, $summary, $detail, 'open', $now)",
                    {"id": a.alert_id, "kind": a.kind, "scope": a.scope, "threshold": a.threshold_pct,
                     "start": a.period_start, "end": a.period_end, "severity": a.severity, "summary": a.summary,
                     "detail": a.detail, "now": now})
    for a in todo.closed:
        con.execute("UPDATE alerts SET status = $status, resolved_at = $now WHERE alert_id = $id",
                    {"status": a.status, "now": now, "id": a.alert_id})
    for alert_id, note, channel in todo.new_notes:
        con.execute("INSERT INTO alert_deliveries VALUES ($id, $note, $channel, 'pending', 0, 0, NULL, $token, $now, "
                    "NULL)", {"id": alert_id, "note": note, "channel": channel, "token": token, "now": now})
    for alert_id, note, channel in todo.retry:
        con.execute("UPDATE alert_deliveries SET claimed_by = $token, claimed_at = $now WHERE alert_id = $id "
                    "AND note = $note AND channel = $channel",
                    {"id": alert_id, "note": note, "channel": channel, "token": token, "now": now})
    for alert_id, note, channel, reason in todo.skipped:
        con.execute("UPDATE alert_deliveries SET status = 'skipped', last_error = $reason, claimed_by = NULL "
                    "WHERE alert_id = $id AND note = $note AND channel = $channel",
                    {"id": alert_id, "note": note, "channel": channel, "reason": reason})


def claimed(con: duckdb.DuckDBPyConnection, token: str) -> list[tuple[Alert, str, str]]:
    """The notes this evaluation claimed, with their alerts, in a stable order (opened before resolved)."""
    alerts = {a.alert_id: a for a in on_record(con, open_only=False)}
    rows = con.execute("SELECT alert_id, note, channel FROM alert_deliveries WHERE claimed_by = $token "
                       "AND status = 'pending' ORDER BY note = 'resolved', alert_id, channel", {"token": token}).fetchall()
    return [(alerts[alert_id], note, channel) for alert_id, note, channel in rows]


# --- 4. record ------------------------------------------------------------------------------------

def record(con: duckdb.DuckDBPyConnection, token: str, deliveries: list[tuple[str, str, Delivery]],
           now: datetime) -> None:
    for alert_id, note, d in deliveries:
        key = {"id": alert_id, "note": note, "channel": d.channel, "token": token}
        if d.ok:
            con.execute("UPDATE alert_deliveries SET status = 'sent', attempts = attempts + $n, rounds = rounds + 1, "
                        "sent_at = $now, claimed_by = NULL WHERE alert_id = $id AND note = $note AND channel = $channel "
                        "AND claimed_by = $token", {**key, "n": d.attempts, "now": now})
            con.execute("UPDATE alerts SET first_sent_at = CASE WHEN $note = 'opened' THEN coalesce(first_sent_at, $now) "
                        "ELSE first_sent_at END, resolved_sent_at = CASE WHEN $note = 'resolved' THEN "
                        "coalesce(resolved_sent_at, $now) ELSE resolved_sent_at END WHERE alert_id = $id",
                        {"id": alert_id, "now": now, "note": note})
        elif d.attempts == 0:  # not tried: its channel failed an earlier note of this evaluation
            con.execute("UPDATE alert_deliveries SET last_error = $error, claimed_by = NULL WHERE alert_id = $id "
                        "AND note = $note AND channel = $channel AND claimed_by = $token", {**key, "error": d.error})
        else:
            con.execute("UPDATE alert_deliveries SET attempts = attempts + $n, rounds = rounds + 1, last_error = $error, "
                        "status = CASE WHEN rounds + 1 >= $max THEN 'failed' ELSE 'pending' END, claimed_by = NULL "
                        "WHERE alert_id = $id AND note = $note AND channel = $channel AND claimed_by = $token",
                        {**key, "n": d.attempts, "error": d.error, "max": MAX_ROUNDS})
