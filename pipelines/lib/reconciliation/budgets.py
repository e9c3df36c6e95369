"""Budgets: the user-edited `config/budgets.csv` (`COMET_LEDGER_BUDGETS`), read and validated.

A budget caps the reported spend of a scope over a recurring period of reporting days:

- `scope`: `account` (everything the query service reports), `team` (the keys a team owns on each
  day, from the key owners file) or `key` (one key name);
- `name`: the team or key name; empty for the account;
- `period`: `day`, `week` (Monday to Sunday) or `month`, in reporting days of
  `COMET_LEDGER_TIMEZONE`;
- `amount_usd`: the budget for one period, a decimal > 0 with at most 6 decimal places;
- `thresholds_pct`: the percentages of the amount that warn, `;`-separated and increasing, e.g.
  `50;80;100` (empty: `100`, a warning once the budget is spent);
- `effective_from` (inclusive) and `effective_to` (exclusive, empty while in force): reporting
  days on period boundaries (a week's on a Monday, a month's on the 1st), so that each period is
  governed by exactly one row. Rows of one scope, name and period must not overlap; gaps are allowed
  (no budget in force then). A team may have a day and a month budget side by side.

The file is optional while `COMET_LEDGER_BUDGETS` is unset: without `config/budgets.csv` there are
no budgets. Validation reuses the rules and the error form of `pipelines/lib/prices/tables.py`:
anything invalid raises `ConfigFileError`, one line naming the file, the line and the column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from pipelines.lib.prices.tables import MONEY, ConfigFileError, _check_history, _display, _read_rows, _Row

BUDGETS_VARIABLE = "COMET_LEDGER_BUDGETS"
BUDGET_COLUMNS = ("scope", "name", "period", "amount_usd", "thresholds_pct", "effective_from", "effective_to")
SCOPES = ("account", "team", "key")
PERIODS = ("day", "week", "month")
DEFAULT_THRESHOLDS = (Decimal(100),)
MAX_THRESHOLD = Decimal(1000)

BUDGETS_SCHEMA = pa.schema(
    [
        ("budget_id", pa.string()),
        ("scope", pa.string()),
        ("name", pa.string()),
        ("period", pa.string()),
        ("amount_usd", MONEY),
        ("thresholds_pct", pa.list_(pa.float64())),
        ("effective_from", pa.date32()),
        ("effective_to", pa.date32()),
    ]
)


@dataclass(frozen=True)
class Budget:
    """One row of the budgets CSV, validated. `line` is where it came from (not part of the content)."""

    scope: str
    name: str | None
    period: str
    amount_usd: Decimal
    thresholds_pct: tuple[Decimal, ...]
    effective_from: date
    effective_to: date | None
    line: int = field(default=0, compare=False)

    @property
    def budget_id(self) -> str:
        """`account/month`, `team:team-a/month`, `key:team-b-prod/day`: the scope, name and period
        (the rows of one budget over time share it; they never overlap)."""
        return budget_id(self.scope, self.name, self.period)

    @property
    def label(self) -> str:
        """How messages name it: `account (month)`, `team team-a (month)`."""
        return f"{self.scope}{'' if self.name is None else ' ' + self.name} ({self.period})"


def budget_id(scope: str, name: str | None, period: str) -> str:
    return f"{scope}{'' if name is None else ':' + name}/{period}"


def read_budgets(path: str | os.PathLike[str], *, required: bool = True) -> list[Budget]:
    """Validated budgets, sorted by scope, name, period, effective_from. A missing file is no budgets
    when not `required` (COMET_LEDGER_BUDGETS unset), an error otherwise."""
    if not required and not Path(path).exists():
        return []
    file = _display(path)
    budgets = [_budget(row) for row in _read_rows(path, BUDGETS_VARIABLE, BUDGET_COLUMNS)]
    budgets.sort(key=lambda b: (b.budget_id, b.effective_from, b.line))
    _check_history(file, budgets, lambda b: b.label, "budget rows of", allow_gaps=True)
    return budgets


def load_budgets(path: str | os.PathLike[str], *, required: bool = True) -> pa.Table:
    """The budgets in `path` as a table with BUDGETS_SCHEMA (for the warehouse's `budgets`)."""
    budgets = read_budgets(path, required=required)
    columns = {
        "budget_id": [b.budget_id for b in budgets],
        "scope": [b.scope for b in budgets],
        "name": [b.name for b in budgets],
        "period": [b.period for b in budgets],
        "amount_usd": [b.amount_usd for b in budgets],
        "thresholds_pct": [[float(t) for t in b.thresholds_pct] for b in budgets],
        "effective_from": [b.effective_from for b in budgets],
        "effective_to": [b.effective_to for b in budgets],
    }
    return pa.table({c.name: pa.array(columns[c.name], type=c.type) for c in BUDGETS_SCHEMA})


def _budget(row: _Row) -> Budget:
    scope = row.raw("scope")
    if scope not in SCOPES:
        raise row.error("scope", f"unknown scope {scope!r} (expected account, team or key)")
    name = row.name("name", required=False)
    if scope == "account" and name is not None:
        raise row.error("name", f"must be empty for an account budget (got {name!r})")
    if scope != "account" and name is None:
        raise row.error("name", f"required for a {scope} budget (the {scope} name), but empty")
    period = row.raw("period")
    if period not in PERIODS:
        raise row.error("period", f"unknown period {period!r} (expected day, week or month)")
    amount = row.decimal("amount_usd")
    if amount is None:
        raise row.error("amount_usd", "required, but empty (USD per period)")
    if amount == 0:
        raise row.error("amount_usd", f"{row.raw('amount_usd')} must be greater than 0")
    thresholds = _thresholds(row)
    effective_from, effective_to = row.period()
    for column, day in (("effective_from", effective_from), ("effective_to", effective_to)):
        if day is not None and not _starts_period(day, period):
            raise row.error(column, f"{day} does not start a {period} ({_boundary(period)}): a budget row covers "
                                    f"whole periods")
    return Budget(scope, name, period, amount, thresholds, effective_from, effective_to, line=row.line)


def _thresholds(row: _Row) -> tuple[Decimal, ...]:
    raw = row.raw("thresholds_pct")
    if raw == "":
        return DEFAULT_THRESHOLDS
    values = []
    for part in raw.split(";"):
        single = _Row(row.file, row.line, {"thresholds_pct": part.strip()})
        try:
            value = single.decimal("thresholds_pct")
        except ConfigFileError:
            value = None
        if value is None or value == 0 or value > MAX_THRESHOLD:
            raise row.error("thresholds_pct", f"{raw!r} is not a list of percentages from 0 to {MAX_THRESHOLD} "
                                              "(exclusive of 0) like 50;80;100")
        if values and value <= values[-1]:
            raise row.error("thresholds_pct", f"{raw!r} must increase from left to right, each percentage once")
        values.append(value)
    return tuple(values)


def _starts_period(day: date, period: str) -> bool:
    return period == "day" or (period == "week" and day.weekday() == 0) or (period == "month" and day.day == 1)


def _boundary(period: str) -> str:
    return {"day": "any day", "week": "a Monday", "month": "the 1st of a month"}[period]


# --- the warehouse --------------------------------------------------------------------------------

MODELS = ("budgets", "budget_status")  # sql/core/budgets.sql, sql/marts/budget_status.sql
TRAILING_DAYS = 7  # the forecast's daily mean: the last 7 reporting days (sql/marts/budget_status.sql)


def build_status(con, budgets_path: str | os.PathLike[str], *, required: bool = True,
                 trailing_days: int = TRAILING_DAYS) -> int:
    """(Re)build `budgets` from the file, then `budget_status`; returns the budget_status rows."""
    load_table(con, budgets_path, required=required)
    return rebuild_status(con, trailing_days=trailing_days)


def load_table(con, budgets_path: str | os.PathLike[str], *, required: bool = True) -> int:
    """(Re)build the warehouse's `budgets` from the file on an open connection (inside
    `warehouse.publish()`); returns its rows."""
    from pipelines.lib.warehouse import run_model

    table = load_budgets(budgets_path, required=required)
    con.register("budgets_input", table)
    try:
        run_model(con, "budgets", {})
    finally:
        con.unregister("budgets_input")
    return table.num_rows


def rebuild_status(con, *, trailing_days: int = TRAILING_DAYS) -> int:
    """(Re)build `budget_status` from `budgets` and `recon_key_daily`; returns its rows."""
    from pipelines.lib.warehouse import relation_exists, run_model

    if trailing_days < 1:
        raise ValueError(f"trailing_days must be at least 1, got {trailing_days}")
    missing = [t for t in ("budgets", "recon_key_daily") if not relation_exists(con, t)]
    if missing:
        raise LookupError(f"budget_status needs the warehouse tables {', '.join(missing)}: materialise "
                          "warehouse/budgets and the reconciliation assets first")
    run_model(con, "budget_status", {"trailing_days": trailing_days})
    [(rows,)] = con.execute("SELECT count(*) FROM budget_status").fetchall()
    return rows
