"""The monthly evidence pack against a simulated month: complete, equal to the warehouse's figures,
byte-identical on rebuild (apart from the build time), honest about missing days and missing data,
self-contained HTML, and replaced whole on a re-run."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, table_rows
from pipelines.lib.review_pack import PackError, build_pack
from pipelines.lib.review_pack.document import usd
from pipelines.lib.review_pack.period import day_ranges, parse_month
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer

MONTH = f"{SIM_START:%Y-%m}"  # the simulator's month: 30 of its 31 days
LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
EMPTY_MONTH = "2026-09"  # after COMET_LEDGER_START_DATE, before the simulated month
BUILT_AT = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
REPO_OWNERS = str(Path(__file__).resolve().parents[2] / "config" / "key_owners.csv")
PACK_FILES = {f"quota_daily_{MONTH}.csv", f"quota_daily_{MONTH}.parquet", f"recon_key_daily_{MONTH}.csv",
              f"anomalies_{MONTH}.csv", "sample_responses.jsonl", "reconciliation.md", "reconciliation.html", "daily_spend_by_key.svg",
              "estimated_vs_reported.svg", "manifest.json"}


@pytest.fixture(scope="module")
def month(tmp_path_factory, traffic):
    """One simulated month backfilled, re-pulled like the daily schedule does, and its pack built once."""
    root = tmp_path_factory.mktemp("review")
    with SimulatorServer(traffic) as sim:
        prices = root / "sim-prices.csv"
        prices.write_text(prices_csv(SIM_START, SIM_DAYS))
        settings = make_settings(root / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=REPO_OWNERS,
                                 COMET_LEDGER_PRICE_SOURCES="config")  # glm-4.6: the model the table forgot
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, SIM_START, LAST)
        materialize_days(settings, LAST - timedelta(days=3), LAST)  # catches the planted restatement
    result = build(settings, MONTH, settings.reports)
    return settings, result


def build(settings, month: str, out_dir: Path, *, built_at: datetime = BUILT_AT, warehouse: Path | None = None,
          inbox: Path | None = None):
    return build_pack(warehouse or settings.warehouse_path, settings.lake, inbox or settings.inbox, month, out_dir,
                      timezone=settings.timezone, built_at=built_at)


def sql_one(settings, sql: str, params: dict | None = None):
    [(value,)] = table_rows(settings, sql, params)
    return value


def window(month: str) -> dict:
    period = parse_month(month, "UTC")
    return {"first": period.first_day, "last": period.last_day}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def md_cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|")


# --- completeness and figures ------------------------------------------------------------------


def test_every_listed_file_exists_and_the_manifest_hashes_them(month):
    settings, result = month
    pack = settings.reports / f"review-{MONTH}"
    assert result.path == pack
    assert {p.name for p in pack.iterdir()} == PACK_FILES
    manifest = json.loads((pack / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == PACK_FILES - {"manifest.json"}
    for entry in manifest["files"]:
        data = (pack / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data), entry["path"]
    assert manifest["period"]["month"] == MONTH and manifest["period"]["timezone"] == settings.timezone
    assert manifest["built_at"] == BUILT_AT.isoformat()
    assert result.files == digest(pack)
    assert [p.name for p in settings.reports.iterdir()] == [f"review-{MONTH}"]  # no staging folder left behind


def test_totals_in_the_markdown_csv_parquet_and_manifest_equal_the_warehouse(month):
    settings, _ = month
    pack = settings.reports / f"review-{MONTH}"
    in_month = "WHERE usage_date BETWEEN $first AND $last"
    reported = sql_one(settings, f"SELECT sum(reported_cost_usd) FROM quota_daily {in_month}", window(MONTH))
    requests = sql_one(settings, f"SELECT sum(reported_requests) FROM quota_daily {in_month}", window(MONTH))
    estimated = sql_one(settings, f"SELECT sum(estimated_cost_usd) FROM recon_key_daily {in_month}", window(MONTH))
    rows = sql_one(settings, f"SELECT count(*) FROM quota_daily {in_month}", window(MONTH))
    assert reported > 0

    with open(pack / f"quota_daily_{MONTH}.csv", newline="") as fh:
        exported = list(csv.DictReader(fh))
    assert list(exported[0]) == ["usage_date", "key_name", "team", "reported_cost_usd", "reported_requests",
                                 "pulled_at", "pull_id"]
    assert len(exported) == rows
    assert sum(Decimal(r["reported_cost_usd"]) for r in exported) == reported
    assert sum(int(r["reported_requests"]) for r in exported) == requests
    order = [(r["usage_date"], r["key_name"]) for r in exported]
    assert order == sorted(order)
    parquet = pq.read_table(pack / f"quota_daily_{MONTH}.parquet").to_pylist()
    assert len(parquet) == rows and sum(r["reported_cost_usd"] for r in parquet) == reported

    md = (pack / "reconciliation.md").read_text()
    assert f"Reported by CometAPI (query service): ${reported}" in md
    assert f"Estimated from your logs: ${usd(estimated)}" in md
    # every spend breakdown's total row is the reported total (allocations add up exactly)
    totals = re.findall(r"^\| \*\*total\*\* \|.*$", md, flags=re.M)
    assert sum(f"**{reported}**" in line for line in totals) >= 5  # key, team, model, category, status, day

    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["totals"]["reported_cost_usd"] == f"{reported}"
    assert manifest["totals"]["estimated_cost_usd"] == usd(estimated)
    assert manifest["totals"]["reported_requests"] == requests


def test_the_reconciliation_csv_carries_every_column_of_recon_key_daily(month):
    settings, _ = month
    with open(settings.reports / f"review-{MONTH}" / f"recon_key_daily_{MONTH}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for (c,) in table_rows(settings, "SELECT column_name FROM duckdb_columns() "
                                                  "WHERE table_name = 'recon_key_daily' ORDER BY column_index")]
    assert set(rows[0]) == set(columns) and "adjustments_usd" in columns
    in_month = "FROM recon_key_daily WHERE usage_date BETWEEN $first AND $last"
    assert len(rows) == sql_one(settings, f"SELECT count(*) {in_month}", window(MONTH))
    adjustments = sql_one(settings, f"SELECT sum(adjustments_usd) {in_month}", window(MONTH))
    assert adjustments and sum(Decimal(r["adjustments_usd"]) for r in rows if r["adjustments_usd"]) == adjustments
    assert all(re.fullmatch(r"-?\d+\.\d{6}", r["adjustments_usd"]) for r in rows if r["adjustments_usd"])


def test_flagged_key_days_appear_with_status_and_explanation(month, traffic):
    settings, result = month
    md = (settings.reports / f"review-{MONTH}" / "reconciliation.md").read_text()
    flagged = table_rows(settings, "SELECT usage_date, key_name, status, explanation FROM recon_key_daily "
                                   "WHERE is_flagged AND usage_date BETWEEN $first AND $last", window(MONTH))
    assert len(flagged) == result.flagged_key_days >= 5
    for day, key, status, explanation in flagged:
        assert re.search(rf"^\| {day} \| {re.escape(key)} \|.*\| {status} \| {re.escape(md_cell(explanation))} \|$",
                         md, flags=re.M), (day, key)
    leak = traffic.planted["missing_logs"]
    assert f"7 requests billed by CometAPI are missing from your logs: ${leak['usd']}" in md


def test_balances_prices_anomalies_and_caveats_are_stated(month):
    settings, _ = month
    md = (settings.reports / f"review-{MONTH}" / "reconciliation.md").read_text()
    snapshot = table_rows(settings, "SELECT balance_usd FROM balance_snapshots ORDER BY fetched_at LIMIT 1")[0][0]
    # The only snapshots were taken after the month: none is its opening balance. The summary says so
    # without an amount; the nearest snapshot is shown in the balances section only.
    summary = md[md.index("## Summary"):md.index("## Opening and closing balance")]
    assert "Opening balance: no opening balance recorded (no snapshot was taken during the month" in summary
    assert f"${snapshot}" not in summary.split("closing balance:")[0]
    balances = md[md.index("## Opening and closing balance"):md.index("## Spend")]
    assert re.search(rf"^\| nearest to the start \| 2026-10-01 00:00:00 UTC \| .* \| {snapshot} \|", balances, flags=re.M)
    assert "not an opening balance for the month" in balances
    assert json.loads((settings.reports / f"review-{MONTH}" / "manifest.json").read_text())["totals"][
        "opening_balance_usd"] is None
    versions = {v for (v,) in table_rows(settings, "SELECT DISTINCT price_version_id FROM requests "
                                                   "WHERE price_version_id IS NOT NULL")}
    assert len(versions) >= 2 and all(f"| {v} |" in md for v in versions)
    assert "| glm-4.6 | 21 |" in md  # the unpriced model, counted, never priced at 0
    assert "reporting day in UTC" in md and "Rates to verify at the source" in md
    assert "Per-call models are billed per call" in md and "kling_video at $0.350000" in md
    assert "restated by a later pull: $0.640000 -> $0.815000" in md


def test_a_snapshot_taken_during_the_month_is_its_opening_balance(month, tmp_path):
    settings, _ = month
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(settings.warehouse_path, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("INSERT INTO balance_snapshots BY NAME SELECT * REPLACE (TIMESTAMPTZ '2026-10-01 06:20:00+00' "
                    "AS fetched_at, 512.25::DECIMAL(18, 6) AS balance_usd, 'in-month' AS snapshot_id) "
                    "FROM balance_snapshots LIMIT 1")
    result = build(settings, MONTH, tmp_path / "out", warehouse=warehouse)
    md = (result.path / "reconciliation.md").read_text()
    assert ("Opening balance: $512.250000 (snapshot of 2026-10-01 06:20:00 UTC, 0 d 6 h 20 min after "
            "2026-10-01 00:00:00 UTC)") in md
    assert "| opening | 2026-10-01 00:00:00 UTC | 2026-10-01 06:20:00 UTC |" in md
    assert "not an opening balance" not in md
    assert json.loads((result.path / "manifest.json").read_text())["totals"]["opening_balance_usd"] == "512.250000"


def test_the_sample_is_raw_inbox_responses_with_their_token_counts(month):
    settings, result = month
    lines = (settings.reports / f"review-{MONTH}" / "sample_responses.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == result.sample_size > 0
    shapes = {r["usage_shape"] for r in records}
    assert {"chat_completion", "anthropic_message", "response", "task"} <= shapes
    for shape in shapes:
        ids = [r["request_id"] for r in records if r["usage_shape"] == shape]
        assert 1 <= len(ids) <= 3 and ids == sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    for r in records:
        path = settings.inbox / r["source"]["file"]
        text = (gzip.open(path, "rt") if path.name.endswith(".gz") else open(path)).read()
        envelope = json.loads(text.splitlines()[r["source"]["line"] - 1])
        assert r["response"] == envelope["response"], r["request_id"]
        tokens = r["tokens"]
        if r["usage_status"] == "known":
            assert tokens["total_tokens"] == tokens["prompt_tokens"] + tokens["completion_tokens"]
            assert r["raw_usage"] is not None


# --- determinism, atomicity, self-containment ---------------------------------------------------


def test_building_twice_gives_identical_bytes_apart_from_the_build_time(month, tmp_path):
    settings, first = month
    again = build(settings, MONTH, tmp_path, built_at=BUILT_AT + timedelta(days=3, seconds=7))
    a, b = digest(first.path), digest(again.path)
    assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (first.path, again.path))
    assert ma.pop("built_at") != mb.pop("built_at")
    assert ma == mb
    for name in ("reconciliation.md", "reconciliation.html"):
        assert "2026-11-30" not in (again.path / name).read_text()  # the build time is in the manifest only


def test_a_rerun_replaces_the_pack_whole(month, tmp_path):
    settings, _ = month
    out = tmp_path / "reports"
    build(settings, MONTH, out)
    (out / f"review-{MONTH}" / "stale.txt").write_text("from an older pack")
    build(settings, MONTH, out)
    assert {p.name for p in (out / f"review-{MONTH}").iterdir()} == PACK_FILES
    assert [p.name for p in out.iterdir()] == [f"review-{MONTH}"]


def test_the_html_is_self_contained_and_embeds_the_charts(month):
    settings, _ = month
    pack = settings.reports / f"review-{MONTH}"
    page = (pack / "reconciliation.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert not re.search(r"<(script|link|iframe)\b|@import|url\(", page, flags=re.I)
    for chart in ("daily_spend_by_key.svg", "estimated_vs_reported.svg"):
        svg = (pack / chart).read_bytes()
        assert svg.startswith(b"<?xml") and b"<dc:date>" not in svg
        assert f"data:image/svg+xml;base64,{base64.b64encode(svg).decode()}" in page
        assert f"]({chart})" in (pack / "reconciliation.md").read_text()


# --- what the pack says when data is missing ----------------------------------------------------


def test_a_partial_month_says_which_days_it_covers(month):
    settings, result = month
    md = (settings.reports / f"review-{MONTH}" / "reconciliation.md").read_text()
    assert (result.days_with_data, result.days_in_month) == (30, 31)
    assert "Data covers 30 of 31 days: 2026-10-01..2026-10-30. No data for 2026-10-31" in md
    assert json.loads((result.path / "manifest.json").read_text())["period"]["data_days"] == "2026-10-01..2026-10-30"


def test_a_pack_built_before_its_month_ended_is_labelled_partial(month, tmp_path):
    settings, complete = month
    assert not complete.partial and "partial month" not in (complete.path / "reconciliation.md").read_text().lower()
    early = build(settings, MONTH, tmp_path, built_at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    md = (early.path / "reconciliation.md").read_text()
    assert early.partial and md.startswith(f"# Budget review evidence pack: {MONTH} (partial month)\n")
    assert f"Partial month: this pack was built before {MONTH} ended" in md
    assert json.loads((early.path / "manifest.json").read_text())["period"]["partial"] is True
    assert "<h1>Budget review evidence pack: 2026-10 (partial month)</h1>" in (early.path / "reconciliation.html").read_text()


def test_an_empty_month_still_gives_a_complete_pack_that_says_so(month, tmp_path):
    settings, _ = month
    result = build(settings, EMPTY_MONTH, tmp_path)
    names = {n.replace(EMPTY_MONTH, MONTH) for n in (p.name for p in result.path.iterdir())}
    assert names == PACK_FILES and not result.has_data
    md = (result.path / "reconciliation.md").read_text()
    assert f"There is no data for {EMPTY_MONTH}" in md
    # the only snapshot was taken after the month: never passed off as its opening balance
    assert "taken after the month ended, so it is not an opening balance for the month" in md
    assert (result.path / f"quota_daily_{EMPTY_MONTH}.csv").read_text().count("\n") == 1  # the header only
    assert (result.path / f"anomalies_{EMPTY_MONTH}.csv").read_text().count("\n") == 1
    assert pq.read_table(result.path / f"quota_daily_{EMPTY_MONTH}.parquet").num_rows == 0
    assert (result.path / "sample_responses.jsonl").read_bytes() == b""
    assert json.loads((result.path / "manifest.json").read_text())["totals"]["reported_cost_usd"] == "0.000000"
    assert (result.path / "daily_spend_by_key.svg").read_bytes().startswith(b"<?xml")


def test_the_warehouse_anomalies_of_the_month_are_listed(month, traffic):
    settings, result = month
    md = (result.path / "reconciliation.md").read_text()
    if not table_rows(settings, "SELECT 1 FROM duckdb_tables() WHERE table_name = 'anomalies'"):
        assert result.anomalies is None and "Anomaly detection has not run" in md
        return
    rows = table_rows(settings, "SELECT DISTINCT usage_date, key_name, kind, detail FROM anomalies "
                                "WHERE usage_date BETWEEN $first AND $last", window(MONTH))
    assert result.anomalies == len(rows)
    assert all(md_cell(detail) in md for *_, detail in rows)
    leak = traffic.planted["missing_logs"]
    if any(kind == "unlogged_gateway_requests" for _, _, kind, _ in rows):
        assert f"| {leak['date']} | {leak['key']} | unlogged_gateway_requests |" in md


def test_long_evidence_is_shortened_in_the_report_and_whole_in_the_anomalies_csv(month):
    settings, result = month
    with open(result.path / f"anomalies_{MONTH}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    warehouse = table_rows(settings, "SELECT DISTINCT usage_date, key_name, kind, evidence FROM anomalies "
                                     "WHERE usage_date BETWEEN $first AND $last", window(MONTH))
    assert len(rows) == result.anomalies == len(warehouse) > 0
    assert {(r["usage_date"], r["key_name"], r["kind"], r["evidence"]) for r in rows} == {
        (d.isoformat(), k or "", kind, e or "") for d, k, kind, e in warehouse}
    longest = max((e for *_, e in warehouse if e), key=len)
    assert len(longest) > 120  # a list of request ids
    md = (result.path / "reconciliation.md").read_text()
    html = (result.path / "reconciliation.html").read_text()
    assert longest not in md and f"{longest[:30]}" in md and f"(in full in `anomalies_{MONTH}.csv`)" in md
    assert f"<details><summary>{longest[:30]}" in html and f"<div>{longest} (in full in" in html


def with_anomalies(settings, tmp_path: Path, *rows: str) -> Path:
    """A copy of the warehouse whose anomalies table holds exactly `rows` (none: no table at all)."""
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copyfile(settings.warehouse_path, warehouse)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("DROP TABLE IF EXISTS anomalies")
        if rows:
            con.execute("""CREATE TABLE anomalies (detected_at TIMESTAMPTZ, usage_date DATE, key_name VARCHAR,
                           kind VARCHAR, severity VARCHAR, detail VARCHAR, amount_usd DOUBLE, evidence VARCHAR,
                           action VARCHAR)""")
            for row in rows:
                con.execute(f"INSERT INTO anomalies VALUES {row}")
    return warehouse


def test_without_an_anomalies_table_the_pack_says_detection_has_not_run(month, tmp_path):
    settings, _ = month
    result = build(settings, MONTH, tmp_path / "out", warehouse=with_anomalies(settings, tmp_path))
    md = (result.path / "reconciliation.md").read_text()
    assert result.anomalies is None
    assert "Anomaly detection has not run: the warehouse has no anomalies table" in md


def test_anomalies_are_listed_when_detection_has_run(month, tmp_path):
    settings, _ = month
    warehouse = with_anomalies(
        settings, tmp_path,
        "(now(), DATE '2026-10-25', 'team-a-prod', 'unlogged_gateway_requests', 'critical', "
        "'7 billed requests are missing from your logs', 0.04951, 'ips: 198.51.100.66', "
        "'check the request log for the IPs, disable and rotate the key')",
        "(now(), DATE '2026-09-30', 'team-a-prod', 'spend_spike', 'warning', 'outside the month', 1.0, '', '')")
    result = build(settings, MONTH, tmp_path / "out", warehouse=warehouse)
    md = (result.path / "reconciliation.md").read_text()
    assert result.anomalies == 1
    assert ("| 2026-10-25 | team-a-prod | unlogged_gateway_requests | critical | "
            "7 billed requests are missing from your logs | 0.049510 |") in md
    assert "Anomalies: 1 finding(s) for the month (1 critical)." in md
    assert "disable and rotate the key" in md and "outside the month" not in md
    assert "has not run" not in md


def test_unreadable_inbox_lines_are_said_never_guessed(month, tmp_path):
    settings, first = month
    inbox = tmp_path / "inbox"
    shutil.copytree(settings.inbox, inbox)
    records = [json.loads(x) for x in (first.path / "sample_responses.jsonl").read_text().splitlines()]
    gone = records[0]["source"]["file"]
    (inbox / gone).unlink()
    result = build(settings, MONTH, tmp_path / "out", inbox=inbox)
    again = [json.loads(x) for x in (result.path / "sample_responses.jsonl").read_text().splitlines()]
    missing = [r for r in again if r["source"]["file"] == gone]
    assert missing and all(r["response"] is None and "no longer in the inbox" in r["response_unavailable"]
                           for r in missing)
    assert [r["tokens"] for r in again] == [r["tokens"] for r in records]


def test_a_missing_warehouse_or_a_bad_month_fails_with_a_clear_reason(month, tmp_path):
    settings, _ = month
    with pytest.raises(PackError, match="no warehouse at"):
        build(settings, MONTH, tmp_path, warehouse=tmp_path / "nowhere.duckdb")
    with pytest.raises(ValueError, match="YYYY-MM"):
        build(settings, "2026/10", tmp_path)
    assert not (tmp_path / "review-2026/10").exists()


# --- pure helpers -------------------------------------------------------------------------------


def test_money_has_six_decimals_and_day_ranges_fold():
    assert usd(Decimal("1.5")) == "1.500000" and usd(-0.0000001) == "0.000000" and usd(None) == "n/a"
    assert usd(0.0000125) == "0.000012" and usd(2.675) == "2.675000"
    d = parse_month("2026-02", "UTC")
    assert (d.first_day.isoformat(), d.last_day.isoformat(), d.days_in_month) == ("2026-02-01", "2026-02-28", 28)
    days = [d.first_day + timedelta(days=i) for i in (0, 1, 2, 5, 7, 8)]
    assert day_ranges(days) == "2026-02-01..2026-02-03, 2026-02-06, 2026-02-08..2026-02-09"
    shanghai = parse_month("2026-10", "Asia/Shanghai")
    assert shanghai.starts_at == datetime(2026, 9, 30, 16, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_month("2026-13", "UTC")
    with pytest.raises(ValueError):
        parse_month("2026-10", "Mars/Olympus")
