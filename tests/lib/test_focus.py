"""The FOCUS 1.2 export (pipelines/lib/focus.py) against simulated months: checked by the FinOps
Foundation's own validator, equal to the warehouse to the micro-dollar, byte-identical on re-run,
corrections in the month they happened, an empty month empty and saying so, an unfinished month only
when asked and marked in every row."""

from __future__ import annotations

import csv
import fcntl
import json
import re
import shutil
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow.parquet as pq
import pytest

import focus_validator_env
from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, table_rows
from pipelines.cli import main
from pipelines.lib import clock, focus
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[2]
MONTH = f"{SIM_START:%Y-%m}"  # the demo's month: the simulator's 30 days of 2026-10
LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
EMPTY_MONTH = "2026-09"  # after COMET_LEDGER_START_DATE, before any traffic
AFTER = datetime(2026, 11, 3, 6, 15, tzinfo=UTC)  # the suite's "now": October has ended, November has not
OWNERS = str(REPO / "config" / "key_owners.csv")
DOCS = REPO / "docs" / "focus.md"


# The two simulated worlds are built once per test run and shared, read-only, by the test processes
# (pytest-xdist); every export a test makes goes to its own folder.
STAND_IN = SimpleNamespace(url="http://127.0.0.1:9", api_key="sk-" + "0" * 48)  # exports call no service


def shared_world(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """`build(root)` once per test run (the first process to get here builds, the others wait), then
    the folder it built."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / name
    with open(root.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            (root / ".built").touch()
    return root


def build_demo(root: Path) -> None:
    traffic = generate_traffic(seed=7, start=SIM_START, days=SIM_DAYS)
    with SimulatorServer(traffic) as sim:
        prices = root / "sim-prices.csv"
        prices.write_text(prices_csv(SIM_START, SIM_DAYS))
        settings = make_settings(root / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=OWNERS)
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, SIM_START, LAST)
        materialize_days(settings, LAST - timedelta(days=3), LAST)


def restated_traffic():
    return generate_traffic(seed=7, start=date(2026, 10, 26), days=6, requests_per_day=5)  # 26-31 October


def build_restated(root: Path) -> None:
    traffic = restated_traffic()
    with SimulatorServer(traffic) as sim, pytest.MonkeyPatch.context() as mp:
        prices = root / "sim-prices.csv"
        prices.write_text(prices_csv(date(2026, 10, 26), 6))
        settings = make_settings(root / "home", sim, COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=OWNERS)
        write_inbox(traffic, settings.inbox)
        mp.setenv(clock.VARIABLE, clock.running_from("2026-11-01T06:15:00+00:00"))
        materialize_days(settings, date(2026, 10, 26), date(2026, 10, 31))
        mp.setenv(clock.VARIABLE, clock.running_from("2026-11-02T06:15:00+00:00"))
        materialize_days(settings, date(2026, 10, 29), date(2026, 10, 31))


LATE_START = date(2026, 10, 31)


def late_refund_traffic():
    """31 October and 1 November, every planted task on 31 October; the mj_imagine task fails and the
    ledger refunds it 13 hours later, after midnight (20 requests a day: 1 November's own tasks keep
    the key-day's spend above the refund)."""
    return generate_traffic(seed=7, start=LATE_START, days=2, requests_per_day=20, refund_delay=timedelta(hours=13))


def build_late_refund(root: Path) -> None:
    traffic = late_refund_traffic()
    with SimulatorServer(traffic) as sim:
        prices = root / "sim-prices.csv"
        prices.write_text(prices_csv(LATE_START, 2))
        settings = make_settings(root / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=OWNERS)
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, LATE_START, LATE_START + timedelta(days=1))
        materialize_days(settings, LATE_START, LATE_START + timedelta(days=1))  # the re-pull: the late kling correction


@pytest.fixture(scope="module")
def demo(tmp_path_factory, worker_id):
    """The demo month with CometAPI's ledger pulled: backfilled, re-pulled as the daily schedule does
    (catching the planted restatement), and exported once."""
    root = shared_world(tmp_path_factory, worker_id, "focus-demo", build_demo)
    settings = make_settings(root / "home", STAND_IN, COMET_LEDGER_PRICES=str(root / "sim-prices.csv"),
                             COMET_LEDGER_KEY_OWNERS=OWNERS)
    return settings, export(settings, MONTH, tmp_path_factory.mktemp("focus-demo-export"))


@pytest.fixture(scope="module")
def restated(tmp_path_factory, worker_id):
    """The last days of October from the query service alone (no ledger): pulled on 1 November, then
    re-pulled on 2 November, which restates 29 October (the simulator's planted late correction)."""
    root = shared_world(tmp_path_factory, worker_id, "focus-restated", build_restated)
    settings = make_settings(root / "home", STAND_IN, COMET_LEDGER_PRICES=str(root / "sim-prices.csv"),
                             COMET_LEDGER_KEY_OWNERS=OWNERS)
    return settings, restated_traffic()


@pytest.fixture(scope="module")
def late_refund(tmp_path_factory, worker_id):
    """A task charged on 31 October and refunded by the ledger on 1 November, with the ledger pulled."""
    root = shared_world(tmp_path_factory, worker_id, "focus-late-refund", build_late_refund)
    settings = make_settings(root / "home", STAND_IN, COMET_LEDGER_PRICES=str(root / "sim-prices.csv"),
                             COMET_LEDGER_KEY_OWNERS=OWNERS)
    return settings, late_refund_traffic()


def export(settings, month: str, out_dir: Path, *, now: datetime = AFTER, partial: bool = False) -> focus.FocusExport:
    return focus.export_month(settings.warehouse_path, month, out_dir, timezone=settings.timezone, now=now,
                              partial=partial)


def rows_of(result: focus.FocusExport) -> list[dict]:
    parquet, _ = focus.file_names(result.month)
    return pq.read_table(result.path / parquet).to_pylist()


def documented_failures(when: str) -> set[str]:
    """The validator rules docs/focus.md lists as failing on the export `when` ("a month with charges"
    or "an empty month"), each with its reason."""
    listed = re.findall(r"^\| `([A-Za-z]+-[A-Z]-\d{3}-[MCO])` \| ([^|]+?) \| ([^|]+?) \|$", DOCS.read_text(), re.M)
    assert all(len(reason) > 40 for _, _, reason in listed), "every listed rule says why"
    return {rule for rule, case, _ in listed if case == when}


def validate(path: Path) -> focus_validator_env.Report:
    try:
        return focus_validator_env.run(path, version=focus.FOCUS_VERSION, applicability=focus.APPLICABILITY_CRITERIA)
    except focus_validator_env.ValidatorUnavailable as exc:
        pytest.fail(f"the FOCUS validator cannot run, so the export is not validated: {exc}")


# --- the FinOps Foundation's validator -----------------------------------------------------------


def test_the_validator_fails_no_rule_on_the_demo_month_beyond_those_the_docs_explain(demo):
    settings, result = demo
    assert result.rows > 300
    for name in focus.file_names(MONTH):  # the Parquet file, and the CSV as the validator reads it
        started = time.monotonic()
        report = validate(result.path / name)
        print(f"focus-validator on {name} ({result.rows} rows): {report.total} rules, {report.passed} pass, "
              f"{report.failed} fail, {report.skipped} skipped, {time.monotonic() - started:.1f}s")
        assert report.total == report.passed + report.failed + report.skipped > 500
        assert report.passed > 150  # the rules on every column the export has ran, and passed
        assert set(report.failed_rules) == documented_failures("a month with charges"), report.output[-3000:]
        assert report.failed == len(report.failed_rules)
        assert not [rule for rule in report.failed_rules if rule.endswith("-M")]  # no mandatory rule fails
        for column in ("BilledCost", "ChargeClass", "ChargePeriodStart", "ConsumedQuantity", "PricingQuantity",
                       "SubAccountId", "Tags"):
            assert re.search(rf"^\S+ {column}-C-000-[MCO]: PASS", report.output, re.M), (name, column)


def test_the_validator_passes_a_correction_of_an_earlier_month(restated, tmp_path):
    settings, _ = restated
    november = export(settings, "2026-11", tmp_path, now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC), partial=True)
    assert [r["ChargeClass"] for r in rows_of(november)] == ["Correction"]
    report = validate(november.path / focus.file_names("2026-11")[0])
    assert set(report.failed_rules) == documented_failures("a month with charges"), report.output[-3000:]
    assert re.search(r"^\S+ ChargeClass-C-000-M: PASS", report.output, re.M)


def test_an_empty_month_is_an_empty_export_that_says_so(demo, tmp_path):
    settings, full = demo
    result = export(settings, EMPTY_MONTH, tmp_path)
    parquet, csv_name = focus.file_names(EMPTY_MONTH)
    table = pq.read_table(result.path / parquet)
    assert table.num_rows == 0 and table.schema.equals(pq.read_table(full.path / focus.file_names(MONTH)[0]).schema)
    assert (result.path / csv_name).read_text().splitlines() == [",".join(focus.SCHEMA.names)]
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["rows"] == 0 and manifest["partial"] is False
    assert manifest["note"].startswith(f"No charges for {EMPTY_MONTH}")
    assert manifest["totals"] == {"billed_cost_usd": "0.000000", "by_charge_kind": {}}
    report = validate(result.path / parquet)
    assert set(report.failed_rules) == documented_failures("an empty month"), report.output[-3000:]


# --- figures ----------------------------------------------------------------------------------


def test_the_months_totals_equal_the_warehouse_to_the_micro_dollar(demo):
    settings, result = demo
    rows = rows_of(result)
    window = {"first": SIM_START, "last": date(2026, 10, 31)}
    per_key_day = dict(((d, k), v) for d, k, v in table_rows(
        settings, "SELECT usage_date, key_name, billed_cost_usd FROM recon_key_daily "
                  "WHERE usage_date BETWEEN $first AND $last", window))
    assert None not in per_key_day.values()  # the ledger covers every day of the demo
    exported: dict[tuple, Decimal] = {}
    for r in rows:
        key = (r["ChargePeriodStart"].date(), r["SubAccountId"])
        exported[key] = exported.get(key, Decimal(0)) + r["BilledCost"]
    assert exported == {k: v for k, v in per_key_day.items() if v != 0 or k in exported}
    [(month_billed, month_allocated)] = table_rows(
        settings, "SELECT (SELECT sum(billed_cost_usd) FROM chargeback_monthly WHERE month = $first), "
                  "(SELECT sum(allocated_cost_usd) FROM cost_key_model_daily WHERE usage_date BETWEEN $first AND $last)",
        window)
    total = sum((r["BilledCost"] for r in rows), Decimal(0))
    assert total == month_billed == month_allocated == result.billed_cost_usd > 0
    assert sum(result.by_kind.values()) == total and result.by_kind["ledger_adjustment"] != 0  # refunds, corrections
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["totals"]["billed_cost_usd"] == f"{total}"
    for r in rows:
        assert r["BilledCost"] == r["EffectiveCost"] == r["ListCost"] == r["ContractedCost"]
        assert r["BillingPeriodStart"] == datetime(2026, 10, 1, tzinfo=UTC) and r["x_PartialMonth"] is False
    with open(result.path / focus.file_names(MONTH)[1], newline="") as fh:
        as_text = list(csv.DictReader(fh))
    assert len(as_text) == len(rows) and sum(Decimal(r["BilledCost"]) for r in as_text) == total


def test_ledger_refunds_and_corrections_are_adjustments_on_the_day_they_were_booked(demo, traffic):
    settings, result = demo
    adjustments = [r for r in rows_of(result) if r["x_ChargeKind"] == "ledger_adjustment"]
    refund, correction = traffic.planted_dates["refund"], traffic.planted_dates["negative_correction"]
    assert {r["ChargePeriodStart"].date() for r in adjustments} >= {refund, correction}
    for r in adjustments:
        assert r["ChargeCategory"] == "Adjustment" and r["ChargeClass"] is None  # booked in this billing period
        assert r["ConsumedQuantity"] is None and r["PricingCategory"] is None
    booked = table_rows(settings, "SELECT sum(adjustments_usd) FROM recon_key_daily WHERE usage_date BETWEEN $f AND $l",
                        {"f": SIM_START, "l": LAST})[0][0]
    assert sum(r["BilledCost"] for r in adjustments) == booked != 0


def test_a_restated_day_is_a_correction_in_the_month_of_the_pull(restated, tmp_path):
    settings, traffic = restated
    day = traffic.planted_dates["restatement"]
    [(previous, new, pulled_at)] = table_rows(
        settings, "SELECT previous_cost_usd, new_cost_usd, pulled_at FROM quota_restatements")
    assert pulled_at.date() == date(2026, 11, 2) and new != previous
    october = export(settings, "2026-10", tmp_path)
    november = export(settings, "2026-11", tmp_path, now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC), partial=True)

    # October keeps the figure it was delivered with; the change is November's Correction row
    warehouse = table_rows(settings, "SELECT sum(reported_cost_usd) FROM recon_key_daily "
                                     "WHERE usage_date BETWEEN '2026-10-01' AND '2026-10-31'")[0][0]
    assert october.billed_cost_usd == warehouse - (new - previous)
    oct_rows = rows_of(october)
    assert not [r for r in oct_rows if r["ChargeClass"] is not None]
    restated_day = [r for r in oct_rows if r["ChargePeriodStart"].date() == day and r["SubAccountId"] == "media-tasks"]
    assert sum(r["BilledCost"] for r in restated_day) == previous
    [correction] = rows_of(november)
    assert correction["ChargeClass"] == "Correction" and correction["ChargeCategory"] == "Usage"
    assert correction["BilledCost"] == new - previous
    assert correction["ChargePeriodStart"] == datetime.combine(day, datetime.min.time(), UTC)  # the day it corrects
    assert correction["BillingPeriodStart"] == datetime(2026, 11, 1, tzinfo=UTC)  # billed in the month of the pull
    assert correction["x_RestatedAt"] == pulled_at and correction["x_PartialMonth"] is True
    assert f"${previous:.6f} -> ${new:.6f}" in correction["ChargeDescription"]
    assert october.billed_cost_usd + november.billed_cost_usd == warehouse  # nothing lost, nothing counted twice
    assert "1 correction of earlier months" in november.note


def booked_day(row: dict) -> date:
    """The reporting day (UTC here) whose recon_key_daily figure a row is part of: the day the ledger booked
    it for a ledger_correction, whose ChargePeriod is the day of the charge it corrects."""
    return (row["x_BookedAt"] if row["x_ChargeKind"] == "ledger_correction" else row["ChargePeriodStart"]).date()


def test_a_task_refunded_after_midnight_is_a_correction_in_the_month_of_the_refund(late_refund, tmp_path):
    settings, traffic = late_refund
    refund = traffic.planted["refund"]
    assert (refund["date"], refund["booked_date"], refund["model"]) == (LATE_START, date(2026, 11, 1), "mj_imagine")
    october = export(settings, "2026-10", tmp_path)
    november = export(settings, "2026-11", tmp_path, now=datetime(2026, 11, 2, 9, 0, tzinfo=UTC), partial=True)
    oct_rows, nov_rows = rows_of(october), rows_of(november)

    assert [r for r in oct_rows if r["ChargeClass"] is not None] == []
    [correction] = [r for r in nov_rows if r["ChargeClass"] is not None]
    assert (correction["x_ChargeKind"], correction["ChargeClass"], correction["ChargeCategory"]) == \
        ("ledger_correction", "Correction", "Usage")
    assert correction["BilledCost"] == refund["usd"] == -refund["task_usd"] < 0
    assert (correction["SubAccountId"], correction["x_Model"]) == ("media-tasks", "mj_imagine")
    assert correction["ChargePeriodStart"] == datetime(2026, 10, 31, tzinfo=UTC)  # the day of the charge
    assert correction["ChargePeriodEnd"] == datetime(2026, 11, 1, tzinfo=UTC)
    assert correction["BillingPeriodStart"] == datetime(2026, 11, 1, tzinfo=UTC)  # billed in the month of the refund
    assert correction["x_BookedAt"].date() == date(2026, 11, 1) and correction["x_CostSource"] == "gateway_ledger"
    assert correction["ChargeDescription"] == ("refund of a mj_imagine task on key media-tasks charged on 2026-10-31, "
                                               "booked by CometAPI's ledger on 2026-11-01")
    assert "1 correction of earlier months" in november.note
    # the refund is not also an adjustment of 1 November; the corrections of tasks charged the same
    # day (31 October's suno and kling tasks) stay adjustments of their month
    assert not [r for r in nov_rows if r["x_ChargeKind"] == "ledger_adjustment" and r["x_Model"] == "mj_imagine"]
    same_month = [r for r in oct_rows if r["x_ChargeKind"] == "ledger_adjustment"]
    assert {r["x_Model"] for r in same_month} == {"suno_music", "kling_video"}
    assert all(r["ChargeClass"] is None and r["ChargeCategory"] == "Adjustment" for r in same_month)
    assert [r["x_BookedAt"] for r in oct_rows + nov_rows if r["x_ChargeKind"] != "ledger_correction"] == \
        [None] * (len(oct_rows) + len(nov_rows) - 1)

    # each month equals the warehouse per key-day (the day the ledger booked a charge) and in total
    for result, rows, (first, last) in ((october, oct_rows, ("2026-10-01", "2026-10-31")),
                                        (november, nov_rows, ("2026-11-01", "2026-11-30"))):
        per_key_day = dict(((d, k), v) for d, k, v in table_rows(
            settings, "SELECT usage_date, key_name, billed_cost_usd FROM recon_key_daily "
                      "WHERE usage_date BETWEEN $first AND $last", {"first": first, "last": last}))
        assert per_key_day and None not in per_key_day.values()
        exported: dict[tuple, Decimal] = {}
        for r in rows:
            key = (booked_day(r), r["SubAccountId"])
            exported[key] = exported.get(key, Decimal(0)) + r["BilledCost"]
        assert exported == {k: v for k, v in per_key_day.items() if v != 0 or k in exported}
        assert result.billed_cost_usd == sum(per_key_day.values()) == sum(r["BilledCost"] for r in rows)
    assert november.by_kind["ledger_correction"] == refund["usd"]

    report = validate(november.path / focus.file_names("2026-11")[0])
    assert set(report.failed_rules) == documented_failures("a month with charges"), report.output[-3000:]
    assert re.search(r"^\S+ ChargeClass-C-000-M: PASS", report.output, re.M)


# --- re-runs, partial months, the command ------------------------------------------------------


def test_exporting_again_gives_the_same_bytes_apart_from_the_generation_time(demo, tmp_path):
    settings, first = demo
    again = export(settings, MONTH, tmp_path, now=AFTER + timedelta(days=9, seconds=7))
    data = {name: sha for name, sha in first.files.items() if name != "manifest.json"}
    assert data == {name: sha for name, sha in again.files.items() if name != "manifest.json"} and len(data) == 2
    ma, mb = (json.loads((r.path / "manifest.json").read_text()) for r in (first, again))
    assert ma.pop("generated_at") != mb.pop("generated_at")
    assert ma == mb
    export(settings, MONTH, tmp_path, now=AFTER + timedelta(days=10))  # a re-run replaces the folder whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"focus-{MONTH}"]


def test_an_unfinished_month_needs_partial_and_is_marked_in_every_row(demo, tmp_path):
    settings, _ = demo
    mid_october = datetime(2026, 10, 20, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match=r"month 2026-10 has not ended: today is 2026-10-20 in UTC; export it with "
                                         r"--partial"):
        export(settings, MONTH, tmp_path, now=mid_october)
    assert not (tmp_path / f"focus-{MONTH}").exists()
    with pytest.raises(ValueError, match=r"month 2026-12 has not started yet"):
        export(settings, "2026-12", tmp_path, partial=True)
    result = export(settings, MONTH, tmp_path, now=mid_october, partial=True)
    rows = rows_of(result)
    assert rows and all(r["x_PartialMonth"] is True for r in rows) and result.partial
    assert "Partial: 2026-10 has not ended (today is 2026-10-20 in UTC)" in result.note
    with open(result.path / focus.file_names(MONTH)[1], newline="") as fh:
        assert {r["x_PartialMonth"] for r in csv.DictReader(fh)} == {"true"}
    assert json.loads((result.path / "manifest.json").read_text())["partial"] is True


def test_the_command_writes_the_export_and_refuses_an_unfinished_month(demo, monkeypatch, capsys):
    settings, result = demo
    for name in ("COMETAPI_KEY", "COMETAPI_ACCESS_TOKEN", "COMETAPI_QUERY_URL", "COMETAPI_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_LEDGER_HOME", str(settings.home))
    monkeypatch.setenv(clock.VARIABLE, "2026-11-03T06:15:00Z")
    assert main(["export", "focus", "--month", "2026-11"]) == 2
    assert "month 2026-11 has not ended" in capsys.readouterr().err
    assert main(["export", "focus", "--month", MONTH]) == 0
    out = capsys.readouterr().out
    assert f"FOCUS 1.2 export for {MONTH}: {settings.reports / f'focus-{MONTH}'}" in out
    assert f"BilledCost total: ${result.billed_cost_usd}" in out
    assert main(["export", "focus", "--month", "2026-11", "--partial"]) == 0
    assert "Partial: 2026-11 has not ended" in capsys.readouterr().out
    assert main(["export", "focus", "--month", MONTH, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    assert summary["billed_cost_usd"] == f"{result.billed_cost_usd}" and summary["rows"] == result.rows
    assert summary["partial"] is False and summary["files"]["manifest.json"]
    assert {k: v for k, v in summary["files"].items() if k != "manifest.json"} == \
        {k: v for k, v in result.files.items() if k != "manifest.json"}


def test_the_docs_duckdb_query_loads_the_export_as_a_finops_tool_would(demo, tmp_path):
    settings, result = demo
    reports = tmp_path / "reports"
    export(settings, MONTH, reports)
    export(settings, EMPTY_MONTH, reports)  # an empty month alongside loads too
    [query] = re.findall(r"## Loading it as a FinOps tool would.*?```sql\n(.*?)```", DOCS.read_text(), re.S)
    query = query.replace("data/reports/", f"{reports}/")
    with duckdb.connect() as con:
        rows = con.sql(query).fetchall()
    assert {r[0] for r in rows} == {datetime(2026, 10, 1, tzinfo=UTC)}  # an instant, whatever the session's zone
    assert sum(r[6] for r in rows) == result.billed_cost_usd
    assert {r[2] for r in rows} >= {"team-a"} and not any(r[9] for r in rows)
    tokens = sum(r["ConsumedQuantity"] for r in rows_of(result) if r["ConsumedUnit"] == "Tokens")
    assert sum(r[8] or 0 for r in rows) == tokens > 0


def test_a_validator_venv_that_cannot_be_built_is_an_error_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(focus_validator_env, "VENV", tmp_path / "venv-focus")
    monkeypatch.setattr(focus_validator_env, "STAMP", tmp_path / "venv-focus" / ".installed-stamp")
    monkeypatch.setenv("COMET_LEDGER_FOCUS_PYTHON", sys.executable)  # the product's Python: 3.11
    with pytest.raises(focus_validator_env.ValidatorUnavailable, match=r"it needs Python >= 3\.12.*is Python 3\.11"):
        focus_validator_env.ensure()
    monkeypatch.setenv("COMET_LEDGER_FOCUS_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(focus_validator_env.ValidatorUnavailable, match=r"no-such-python"):
        focus_validator_env.run(tmp_path / "x.parquet", version="1.2", applicability=())
    assert not (tmp_path / "venv-focus" / ".installed-stamp").exists()
