"""config/budgets.csv (pipelines/lib/reconciliation/budgets.py) and the budget_status mart it feeds."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib.reconciliation.budgets import BUDGET_COLUMNS, build_status, read_budgets
from pipelines.lib.prices.tables import ConfigFileError

REPO = Path(__file__).resolve().parents[2]
HEADER = ",".join(BUDGET_COLUMNS)


def write(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "budgets.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_the_shipped_file_is_valid_and_covers_every_scope_and_period():
    budgets = read_budgets(REPO / "config" / "budgets.csv")
    assert {b.scope for b in budgets} == {"account", "team", "key"}
    assert {b.period for b in budgets} == {"day", "week", "month"}
    [account] = [b for b in budgets if b.scope == "account"]
    assert account.budget_id == "account/month" and account.name is None
    assert account.thresholds_pct == (Decimal(50), Decimal(80), Decimal(100))


def test_a_good_file_reads_with_ids_defaults_and_a_day_and_month_budget_side_by_side(tmp_path):
    path = write(tmp_path,
                 "team,team-a,month,200.5,80;100,2026-01-01,2026-03-01",
                 "team,team-a,month,300,,2026-03-01,",
                 "team,team-a,day,20,90,2026-01-15,",
                 "key,team-b-prod,week,7,50;100,2026-01-05,")
    budgets = read_budgets(path)
    assert [(b.budget_id, b.effective_from, b.amount_usd) for b in budgets] == [
        ("key:team-b-prod/week", date(2026, 1, 5), Decimal("7")),
        ("team:team-a/day", date(2026, 1, 15), Decimal("20")),
        ("team:team-a/month", date(2026, 1, 1), Decimal("200.5")),
        ("team:team-a/month", date(2026, 3, 1), Decimal("300")),
    ]
    assert budgets[3].thresholds_pct == (Decimal(100),)  # empty: warn once the budget is spent
    assert budgets[2].effective_to == date(2026, 3, 1)


def test_without_the_variable_a_missing_file_is_no_budgets_but_a_named_one_must_exist(tmp_path):
    assert read_budgets(tmp_path / "absent.csv", required=False) == []
    with pytest.raises(ConfigFileError) as err:
        read_budgets(tmp_path / "absent.csv")
    assert str(err.value).startswith("COMET_LEDGER_BUDGETS points at ") and "does not exist" in str(err.value)


BAD = [
    ("unknown scope", "project,x,month,10,,2026-01-01,", "scope", "unknown scope 'project'"),
    ("negative amount", "team,team-a,month,-10,,2026-01-01,", "amount_usd", "-10 is negative"),
    ("zero amount", "team,team-a,month,0,,2026-01-01,", "amount_usd", "must be greater than 0"),
    ("amount not a number", "team,team-a,month,ten,,2026-01-01,", "amount_usd", "is not a decimal number"),
    ("unknown period", "team,team-a,year,10,,2026-01-01,", "period", "unknown period 'year'"),
    ("account with a name", "account,all,month,10,,2026-01-01,", "name", "must be empty for an account budget"),
    ("team without a name", "team,,month,10,,2026-01-01,", "name", "required for a team budget"),
    ("thresholds not numbers", "key,k,day,1,80;high,2026-01-01,", "thresholds_pct", "not a list of percentages"),
    ("thresholds decreasing", "key,k,day,1,100;80,2026-01-01,", "thresholds_pct", "must increase"),
    ("threshold 0", "key,k,day,1,0;100,2026-01-01,", "thresholds_pct", "not a list of percentages"),
    ("month budget from mid-month", "team,team-a,month,10,,2026-01-15,", "effective_from",
     "2026-01-15 does not start a month"),
    ("week budget from a Wednesday", "team,team-a,week,10,,2026-01-07,", "effective_from",
     "2026-01-07 does not start a week (a Monday)"),
    ("month budget ending mid-month", "team,team-a,month,10,,2026-01-01,2026-02-10", "effective_to",
     "does not start a month"),
]


@pytest.mark.parametrize("row, column, says", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_row_is_one_line_naming_file_line_and_column(tmp_path, row, column, says):
    with pytest.raises(ConfigFileError) as err:
        read_budgets(write(tmp_path, "account,,month,100,,2026-01-01,", row))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'budgets.csv'} line 3, column {column}: "), message
    assert says in message


def test_overlapping_rows_of_one_budget_are_refused_naming_both_lines(tmp_path):
    path = write(tmp_path, "team,team-a,month,100,,2026-01-01,", "key,k,day,1,,2026-01-01,",
                 "team,team-a,month,200,,2026-03-01,")
    with pytest.raises(ConfigFileError) as err:
        read_budgets(path)
    assert str(err.value).endswith("line 4, column effective_from: budget rows of team team-a (month) on lines 2 and 4 "
                                   "overlap (2026-01-01..open and 2026-03-01..open)")


# --- budget_status --------------------------------------------------------------------------------

START = date(2026, 10, 1)


@pytest.fixture
def warehouse():
    """35 reporting days (2026-10-01 .. 11-04): key k1 (team-a) $1 a day, k2 (team-b) $0.5 every other day;
    the last day, 11-04, is partial (today, so far)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE recon_key_daily (usage_date DATE, key_name VARCHAR, team VARCHAR, "
                "reported_cost_usd DECIMAL(18, 6), is_partial_day BOOLEAN)")
    rows = []
    for i in range(35):
        day = START + timedelta(days=i)
        rows += [(day, "k1", "team-a", Decimal(1), i == 34),
                 (day, "k2", "team-b", Decimal("0.5") if i % 2 else Decimal(0), i == 34)]
    con.executemany("INSERT INTO recon_key_daily VALUES (?, ?, ?, ?, ?)", rows)
    yield con
    con.close()


def status(con, budget_id: str) -> list[dict]:
    result = con.execute("SELECT * FROM budget_status WHERE budget_id = $b ORDER BY period_start", {"b": budget_id})
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def test_spend_to_date_forecast_and_thresholds_per_period(tmp_path, warehouse):
    path = write(tmp_path, "account,,month,40,50;80;100,2025-01-01,", "team,team-a,week,5,80;100,2026-09-28,",
                 "key,k2,day,0.4,100,2026-10-01,2026-10-05")
    assert build_status(warehouse, path) == 2 + 6 + 4
    october, november = status(warehouse, "account/month")
    # October is closed: $31 of k1 + 15 odd days x $0.5 of k2; the forecast is the spend.
    assert (october["spend_usd"], october["spent_pct"], october["forecast_usd"]) == (Decimal("38.5"), 96.25, 38.5)
    assert october["crossed_pct"] == [50.0, 80.0] and october["status"] == "warning" and not october["is_current"]
    # November holds 4 days ($4 + 2 x $0.5); the last 7 days spent $7 + 3 x $0.5 = $8.5, a mean of
    # $8.5 / 7 a day for the 26 days left.
    assert november["is_current"] and november["as_of"] == date(2026, 11, 4)
    assert (november["days_elapsed"], november["days_remaining"], november["trailing_days"]) == (4, 26, 7)
    assert november["spend_usd"] == Decimal(5)
    assert november["forecast_usd"] == pytest.approx(5 + 8.5 / 7 * 26)
    assert november["crossed_pct"] == [] and november["forecast_crossed_pct"] == [50.0, 80.0]
    assert november["status"] == "ok"
    # November's as-of day is partial (data so far); October's last day is over
    assert (october["is_partial_day"], november["is_partial_day"]) == (False, True)

    weeks = status(warehouse, "team:team-a/week")
    assert [w["period_start"] for w in weeks] == [date(2026, 9, 28) + timedelta(weeks=n) for n in range(6)]
    # The first week is held from Thursday on only: 4 days, and 4 days to average.
    assert (weeks[0]["spend_usd"], weeks[0]["trailing_days"], weeks[0]["crossed_pct"]) == (4, 4, [80.0])
    assert weeks[1]["status"] == "exceeded" and weeks[1]["crossed_pct"] == [80.0, 100.0]
    current = weeks[-1]  # Monday 11-02 .. Wednesday 11-04 held: $3, $1 a day for 4 more days
    assert (current["spend_usd"], current["forecast_usd"], current["status"]) == (3, 7.0, "forecast_exceeded")
    assert current["crossed_pct"] == [] and current["forecast_crossed_pct"] == [80.0, 100.0]

    days = status(warehouse, "key:k2/day")  # effective 10-01 .. 10-04 only
    assert [(d["period_start"], d["spend_usd"], d["status"]) for d in days] == [
        (date(2026, 10, 1), 0, "ok"), (date(2026, 10, 2), Decimal("0.5"), "exceeded"),
        (date(2026, 10, 3), 0, "ok"), (date(2026, 10, 4), Decimal("0.5"), "exceeded")]
    assert not any(d["is_current"] or d["is_partial_day"] for d in days)


def test_a_threshold_is_crossed_at_exactly_its_amount(tmp_path, warehouse):
    # k1 spends $1 a day: a day budget of $1.25 is at 80 % exactly, one of $1 at 100 % exactly
    build_status(warehouse, write(tmp_path, "key,k1,day,1.25,80;100,2026-10-01,", "key,k2,day,1,100,2026-10-01,",
                                  "team,team-a,day,1,100,2026-10-01,"))
    [last] = status(warehouse, "key:k1/day")[-1:]
    assert last["spent_pct"] == 80.0 and last["crossed_pct"] == [80.0] and last["status"] == "warning"
    [last] = status(warehouse, "team:team-a/day")[-1:]
    assert last["crossed_pct"] == [100.0] and last["status"] == "exceeded"


def test_large_budgets_compare_exactly_without_overflow(tmp_path, warehouse):
    # a month's budget of $10,000 or $250,000,000 at 100 %: 100 x amount is beyond DECIMAL(18, 12)
    build_status(warehouse, write(tmp_path, "account,,month,10000,50;100,2026-10-01,",
                                  "team,team-a,month,250000000,100,2026-10-01,", "team,team-b,month,0.000001,100,2026-10-01,"))
    october = status(warehouse, "account/month")[0]
    assert (october["spend_usd"], october["crossed_pct"], october["status"]) == (Decimal("38.5"), [], "ok")
    assert status(warehouse, "team:team-a/month")[0]["status"] == "ok"
    assert status(warehouse, "team:team-b/month")[0]["crossed_pct"] == [100.0]


def test_a_budget_for_a_name_without_spend_is_zero_not_missing(tmp_path, warehouse):
    build_status(warehouse, write(tmp_path, "team,nobody,month,10,,2026-10-01,"))
    rows = status(warehouse, "team:nobody/month")
    assert [(r["period_start"], r["spend_usd"], r["forecast_usd"], r["status"]) for r in rows] == [
        (date(2026, 10, 1), 0, 0.0, "ok"), (date(2026, 11, 1), 0, 0.0, "ok")]


def test_no_budgets_and_no_data_give_an_empty_table(tmp_path, warehouse):
    assert build_status(warehouse, tmp_path / "absent.csv", required=False) == 0
    empty = duckdb.connect()
    empty.execute("CREATE TABLE recon_key_daily (usage_date DATE, key_name VARCHAR, team VARCHAR, "
                  "reported_cost_usd DECIMAL(18, 6), is_partial_day BOOLEAN)")
    assert build_status(empty, write(tmp_path, "account,,month,10,,2026-10-01,")) == 0
