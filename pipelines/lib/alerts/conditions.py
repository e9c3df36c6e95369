"""What is wrong now: the alert conditions, each with its kind, scope and period.

From the warehouse (`warehouse_conditions`):
- `budget_spend`: a current period's reported spend has reached a threshold of its budget
  (`budget_status.crossed_pct`); critical from 100 %, a warning below;
- `budget_forecast`: a current period's forecast reaches 100 % of its budget (or a threshold above
  100 %) while its spend has not: the warning that comes before the money is gone. It opens only
  while the spend is below the threshold (once the spend crosses it, `budget_spend` says so) and
  holds while the forecast stays at or above it;
- `unlogged_gateway_requests`, `new_source_ip`: the critical anomalies of the leaked-key kind
  (`anomalies`: calls CometAPI billed that your logs do not hold; a key used from an address it
  never used before, none of whose calls your logs hold, with spend), one per kind, key and day,
  for the last `LOOKBACK_DAYS` reporting days up to the warehouse's latest;
- `runway`: the balance runs out within the critical runway (`anomalies`, kind runway, critical);
- `smoke_test_failed`: the latest smoke test failed (`smoke_tests`).

From the Dagster instance (`pipelines/defs/alerts/sources.py`): `run_failed` (the latest daily run
failed) and `data_stale` (a freshness check failed).

Budget and anomaly conditions belong to a period (the budget's, the finding's day): a new period is
a new alert. The others are incidents (`INCIDENT_KINDS`): one alert from the moment the condition
is first seen until it clears, whatever the days in between.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import duckdb

from pipelines.lib.warehouse import relation_exists

BUDGET_KINDS = ("budget_spend", "budget_forecast")
ANOMALY_KINDS = ("unlogged_gateway_requests", "new_source_ip")
INCIDENT_KINDS = ("runway", "smoke_test_failed", "run_failed", "data_stale")
WAREHOUSE_KINDS = (*BUDGET_KINDS, *ANOMALY_KINDS, "runway", "smoke_test_failed")
KINDS = (*BUDGET_KINDS, *ANOMALY_KINDS, *INCIDENT_KINDS)
LOOKBACK_DAYS = 7  # anomaly findings of this many reporting days, ending on the warehouse's latest


@dataclass(frozen=True)
class Condition:
    """One thing to tell the owner. `opens=False`: it keeps an open alert open but opens none."""

    kind: str
    scope: str
    period_start: date
    severity: str
    summary: str
    detail: str
    period_end: date | None = None
    threshold_pct: float | None = None
    opens: bool = True

    @property
    def alert_id(self) -> str:
        return alert_id(self.kind, self.scope, self.threshold_pct, self.period_start)

    @property
    def incident(self) -> bool:
        return self.kind in INCIDENT_KINDS


def alert_id(kind: str, scope: str, threshold_pct: float | None, period_start: date) -> str:
    text = f"{kind}|{scope}|{'' if threshold_pct is None else format(threshold_pct, 'g')}|{period_start.isoformat()}"
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Judgement:
    """Conditions found, and the kinds whose every condition was looked at (only those may clear)."""

    conditions: list[Condition] = field(default_factory=list)
    judged: frozenset[str] = frozenset()
    as_of: date | None = None  # the warehouse's latest reporting day (budget and anomaly periods)

    def __add__(self, other: Judgement) -> Judgement:
        return Judgement(self.conditions + other.conditions, self.judged | other.judged, self.as_of or other.as_of)


def warehouse_conditions(con: duckdb.DuckDBPyConnection) -> Judgement:
    """Every warehouse condition that holds now. Kinds whose tables are missing are not judged."""
    as_of = None
    if relation_exists(con, "recon_key_daily"):
        [(as_of,)] = con.execute("SELECT max(usage_date) FROM recon_key_daily").fetchall()
    found = Judgement(as_of=as_of)
    if as_of is not None and relation_exists(con, "budget_status"):
        found += Judgement(budget_conditions(con), frozenset(BUDGET_KINDS))
    if as_of is not None and relation_exists(con, "anomalies"):
        found += Judgement(anomaly_conditions(con, as_of), frozenset(ANOMALY_KINDS))
    if relation_exists(con, "anomalies"):
        found += Judgement(runway_conditions(con), frozenset({"runway"}))
    if relation_exists(con, "smoke_tests"):
        found += Judgement(smoke_test_conditions(con), frozenset({"smoke_test_failed"}))
    return found


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    result = con.execute(sql, params or {})
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _usd(amount: Decimal | float) -> str:
    return f"${amount:,.2f}"


def budget_conditions(con: duckdb.DuckDBPyConnection) -> list[Condition]:
    found = []
    for b in _rows(con, "SELECT * FROM budget_status WHERE is_current ORDER BY budget_id"):
        label = f"{b['scope']}{'' if b['name'] is None else ' ' + b['name']} ({b['period']})"
        period = (f"{b['period_start']}" if b["period"] == "day" else f"{b['period_start']} .. {b['period_end']}")
        numbers = (f"Spend {_usd(b['spend_usd'])} of {_usd(b['amount_usd'])} ({b['spent_pct']:.1f} %) from "
                   f"{b['period_start']} to {b['as_of']}; forecast {_usd(b['forecast_usd'])} "
                   f"({b['forecast_pct']:.1f} %) by {b['period_end']} at {_usd(b['daily_mean_usd'])} a day "
                   f"(mean of the last {b['trailing_days']} days), {b['days_remaining']} day(s) left.")
        for threshold in b["crossed_pct"]:
            over = threshold >= 100
            found.append(Condition(
                "budget_spend", b["budget_id"], b["period_start"], "critical" if over else "warning",
                f"Budget {label} {'exceeded' if over else 'at'} {b['spent_pct']:.1f} % for {period} "
                f"({threshold:g} % threshold)",
                f"{numbers} Look at the scope's spend by model and key (chargeback_monthly, cost_model_daily); "
                "lower key quotas in the CometAPI console if the spend is not expected.",
                period_end=b["period_end"], threshold_pct=threshold))
        for threshold in (t for t in b["forecast_crossed_pct"] if t >= 100):
            found.append(Condition(
                "budget_forecast", b["budget_id"], b["period_start"], "warning",
                f"Budget {label} forecast to reach {b['forecast_pct']:.1f} % by {b['period_end']} "
                f"({threshold:g} % threshold)",
                f"{numbers} At this pace the budget runs out before the period ends: slow the spend, or raise "
                "the budget in config/budgets.csv.",
                period_end=b["period_end"], threshold_pct=threshold, opens=threshold not in b["crossed_pct"]))
    return found


ANOMALY_SQL = """
SELECT kind, usage_date, key_name, count(*) AS findings, sum(amount_usd) AS amount_usd,
       string_agg(detail, ' ' ORDER BY detail) AS detail, any_value(action ORDER BY detail) AS action,
       string_agg(evidence, '; ' ORDER BY detail) AS evidence
FROM anomalies
WHERE usage_date BETWEEN $first AND $last AND severity = 'critical'
  AND (kind = 'unlogged_gateway_requests' OR (kind = 'new_source_ip' AND coalesce(amount_usd, 0) > 0))
GROUP BY kind, usage_date, key_name
ORDER BY usage_date, kind, key_name
"""


def anomaly_conditions(con: duckdb.DuckDBPyConnection, as_of: date) -> list[Condition]:
    found = []
    window = {"first": as_of - timedelta(days=LOOKBACK_DAYS - 1), "last": as_of}
    for a in _rows(con, ANOMALY_SQL, window):
        key = a["key_name"] or "(several keys)"
        what = ("calls CometAPI billed that your logs do not hold" if a["kind"] == "unlogged_gateway_requests"
                else "use from an address the key never used before, none of it in your logs")
        money = "" if a["amount_usd"] is None else f", {_usd(a['amount_usd'])}"
        evidence = a["evidence"] if len(a["evidence"]) <= 500 else a["evidence"][:497] + "..."
        found.append(Condition(
            a["kind"], f"key:{key}", a["usage_date"], "critical",
            f"Possible leaked key {key} on {a['usage_date']}: {what}{money}",
            f"{a['detail']} Evidence: {evidence}. {a['action']} See docs/operations.md, Rotating a leaked key.",
            period_end=a["usage_date"]))
    return found


def runway_conditions(con: duckdb.DuckDBPyConnection) -> list[Condition]:
    rows = _rows(con, "SELECT usage_date, detail, action, amount_usd FROM anomalies WHERE kind = 'runway' "
                      "AND severity = 'critical' ORDER BY usage_date DESC LIMIT 1")
    return [Condition("runway", "account", r["usage_date"], "critical",
                      f"The CometAPI balance is about to run out ({_usd(r['amount_usd'] or 0)} left on "
                      f"{r['usage_date']})", f"{r['detail']} {r['action']}") for r in rows]


def smoke_test_conditions(con: duckdb.DuckDBPyConnection) -> list[Condition]:
    """The failures since the last passing smoke test, if any: one incident from the first of them."""
    tests = _rows(con, "SELECT smoke_test_date, passed, failures, checked_at FROM smoke_tests ORDER BY checked_at")
    streak = []
    for test in tests:
        streak = [] if test["passed"] else streak + [test]
    if not streak:
        return []
    first, latest = streak[0], streak[-1]
    failures = "; ".join((latest["failures"] or "no reason recorded").splitlines())
    return [Condition("smoke_test_failed", "smoke_test", first["smoke_test_date"], "critical",
                      f"The CometAPI smoke test failed on {latest['smoke_test_date']}"
                      + (f" ({len(streak)} failures since {first['smoke_test_date']})" if len(streak) > 1 else ""),
                      f"{failures}. The service's figures must not be trusted for a review until "
                      "`comet-ledger smoke-test` passes again.")]
