"""One definition of a flagged key-day (`recon_key_daily.is_flagged`) read by everyone who reports one.

A world with key-days matched exactly, within tolerance and beyond it: the reconciliation asset's
check and its flagged table, the command line's summary and the review pack name the same key-days,
and a key-day within tolerance is flagged by none of them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines import cli
from pipelines.cli.summary import print_reconciliation, window_summary
from pipelines.lib.review_pack import build_pack
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

FIRST = date(2026, 10, 1)
DAYS = 3
LAST = FIRST + timedelta(days=DAYS - 1)
MONTH = f"{FIRST:%Y-%m}"
# With the simulator's own prices most key-days match to unit rounding; the first day's traffic of
# seed 11 leaves one key-day $0.0156 apart (within a $0.02 tolerance) and two beyond it, and a
# model without a price on the third day makes one `unpriced`.
TOLERANCE_USD = "0.02"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("flagged")
    traffic = generate_traffic(seed=11, start=FIRST, days=DAYS, requests_per_day=12)
    with SimulatorServer(traffic) as sim:
        prices = root / "sim-prices.csv"
        prices.write_text(prices_csv(FIRST, DAYS))
        settings = make_settings(root / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_TOLERANCE_USD=TOLERANCE_USD,
                                 COMET_LEDGER_PRICE_SOURCES="config")  # the model the table forgot stays unpriced
        write_inbox(traffic, settings.inbox)
        run = materialize_days(settings, FIRST, LAST)
    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, MONTH, settings.reports,
                      timezone=settings.timezone, built_at=datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    return settings, run, pack


def statuses(settings) -> dict[tuple[date, str], tuple[str, bool]]:
    rows = table_rows(settings, "SELECT usage_date, key_name, status, is_flagged FROM recon_key_daily")
    return {(d, k): (status, flagged) for d, k, status, flagged in rows}


def expected_flagged(settings) -> set[tuple[str, str]]:
    """The rule, restated here as the oracle: neither matched nor within tolerance."""
    return {(d.isoformat(), k) for (d, k), (status, _) in statuses(settings).items()
            if status not in ("matched", "within_tolerance")}


def key_days_in(markdown: str) -> set[tuple[str, str]]:
    """(day, key) of every table row of a Markdown text whose first two cells are a day and a key."""
    return set(re.findall(r"^\| (\d{4}-\d{2}-\d{2}) \| ([^|]+?) \|", markdown, flags=re.M))


def section(markdown: str, heading: str) -> str:
    start = markdown.index(f"### {heading}\n")
    end = markdown.find("\n#", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def test_the_world_has_key_days_matched_within_tolerance_and_flagged(world):
    settings, _, _ = world
    found = statuses(settings)
    kinds = {status for status, _ in found.values()}
    assert {"matched", "within_tolerance", "over_reported", "under_reported", "unpriced"} <= kinds, kinds
    # is_flagged is the rule, computed once in the warehouse
    for (d, k), (status, flagged) in found.items():
        assert flagged == (status not in ("matched", "within_tolerance")), (d, k, status, flagged)


def test_the_check_and_the_assets_flagged_table_name_exactly_the_flagged_key_days(world):
    settings, run, _ = world
    expected = expected_flagged(settings)
    within = {(d.isoformat(), k) for (d, k), (s, _) in statuses(settings).items() if s == "within_tolerance"}
    [check] = [c for c in run.get_asset_check_evaluations() if c.check_name == "variance_within_tolerance"]
    assert not check.passed and check.metadata["flagged_key_days"].value == len(expected)
    assert key_days_in(check.metadata["flagged"].value) == expected
    described = set(re.findall(r"(\d{4}-\d{2}-\d{2}) (\S+) \w+", check.description.split(": ", 1)[1]))
    assert described == expected and not described & within

    events = [e.materialization for e in run.get_asset_materialization_events()
              if e.asset_key.to_user_string() == "warehouse/recon_key_daily"]
    assert sorted(e.partition for e in events) == [(FIRST + timedelta(days=i)).isoformat() for i in range(DAYS)]
    recon = events[-1].metadata  # one materialisation a day of the run, each with the run's metadata
    assert key_days_in(recon["flagged"].value) == expected
    preview = recon["preview"].value  # the preview shows the column, as the warehouse holds it
    assert "| usage_date | key_name | status | is_flagged |" in preview
    for d, k in within:
        assert re.search(rf"^\| {d} \| {re.escape(k)} \| within_tolerance \| False \|", preview, flags=re.M)


def test_the_command_lines_summary_flags_exactly_the_flagged_key_days(world):
    settings, _, _ = world
    expected = expected_flagged(settings)
    summary = window_summary(settings, FIRST, LAST)["reconciliation"]
    assert {(f["usage_date"], f["key_name"]) for f in summary["flagged"]} == expected
    assert summary["statuses"]["within_tolerance"] == 1
    printed = io.StringIO()
    with redirect_stdout(printed):
        print_reconciliation(settings, FIRST, LAST)
    listed = set(re.findall(r"^  (\d{4}-\d{2}-\d{2}) (\S+) \w+: ", printed.getvalue(), flags=re.M))
    assert listed == expected


def test_the_pack_flags_the_same_key_days_and_lists_those_within_tolerance_apart(world):
    settings, _, pack = world
    expected = expected_flagged(settings)
    found = statuses(settings)
    within = {(d.isoformat(), k) for (d, k), (s, _) in found.items() if s == "within_tolerance"}
    not_matched = {(d.isoformat(), k) for (d, k), (s, _) in found.items() if s != "matched"}
    assert pack.flagged_key_days == len(expected)
    manifest = json.loads((pack.path / "manifest.json").read_text())
    assert manifest["totals"]["flagged_key_days"] == len(expected)
    assert manifest["totals"]["not_matched_key_days"] == len(not_matched) == len(expected) + len(within)

    md = (pack.path / "reconciliation.md").read_text()
    assert key_days_in(section(md, "Flagged key-days and their explanations")) == expected
    assert key_days_in(section(md, "Key-days within tolerance")) == within
    summary = section(md.replace("## Summary", "### Summary"), "Summary")
    assert (f"Key-days flagged (beyond tolerance, or not comparable): {len(expected)} of {len(found)}"
            in summary)
    assert (f"Key-days not matched exactly: {len(not_matched)} of {len(found)} ({len(within)} within tolerance, "
            f"{len(expected)} flagged)." in summary)
    by_day = section(md, "By day")
    flagged_per_day = {d: sum(1 for fd, _ in expected if fd == d) for d in {d.isoformat() for d, _ in found}}
    for d, n in flagged_per_day.items():
        assert re.search(rf"^\| {d} \|.*\| {n} \|$", by_day, flags=re.M), (d, n)
    with open(pack.path / f"recon_key_daily_{MONTH}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["is_flagged"] for r in rows} == {"true", "false"}
    assert {(r["usage_date"], r["key_name"]) for r in rows if r["is_flagged"] == "true"} == expected


def test_reviewing_a_warehouse_built_before_is_flagged_says_to_run_first(world, tmp_path, monkeypatch, capsys):
    settings, _, _ = world
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(settings.warehouse_path, home / "warehouse.duckdb")
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # as an earlier version built it
        con.execute("ALTER TABLE recon_key_daily DROP COLUMN is_flagged")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMET_LEDGER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-09-01")
    assert cli.main(["review", "--month", MONTH]) == 1
    err = capsys.readouterr().err
    assert err == (f"comet-ledger: error: the warehouse at {home / 'warehouse.duckdb'} was built by an earlier "
                   "version (no column recon_key_daily.is_flagged): run `comet-ledger run` first to rebuild it, "
                   "then review again\n")
    assert not (home / "reports" / f"review-{MONTH}").exists()
