"""Idempotency: every asset re-materialised three times gives identical table hashes.

The world: six simulated days, the gateway ledger pulled with the access token, the client logs in
the inbox plus a file with a rejected line and a duplicate, and a console CSV export with a good row
(also in the API's answer) and a rejected one, so `rejects`, the duplicate accounting and the
API/CSV dedupe are part of what must not move.

The daily_ledger job (every asset but the smoke test and the review pack) runs over the whole window
three times in a row, in one data home. After each run the content hash of EVERY warehouse table is
taken (support.digests), leaving out only columns that record when something happened:

- quota_daily.pulled_at / pull_id, quota_restatements.previous_pulled_at / pulled_at / pull_id:
  every run pulls again, and the latest pull is the one shown;
- balance_snapshots and key_snapshots: fetched_at / snapshot_id, and the tables are compared as the
  set of their distinct rows: a snapshot is a point-in-time observation and every run appends one, so
  their row counts grow by exactly one snapshot per run (asserted separately);
- anomalies.detected_at (the build that re-detected a finding); for the balance-ledger findings
  (runway, top_up, balance_jump), which describe the latest snapshot, the snapshot's id and time in
  their detail / evidence text, and their finding_id (a hash of that evidence).

Kept in on purpose: inbox_files.staged_at, model_versions.built_at and rebuild_inputs. In one home an
unchanged inbox file is read once, a model version recorded once and inbox_files kept while nothing it
reads changed, so a re-run that re-read the inbox, re-recorded its models or rebuilt inbox_files for
nothing would change them and fail the test.

The lake is checked too: the datasets a re-run replaces (request_logs, gateway_logs) and the inbox
staging (read once per file version) are byte-identical after each run; the pull and snapshot
datasets gain exactly one pull / one snapshot per run, by design (every pull is kept).

Then the monthly review pack (the reports asset) is built three times from that warehouse: every file
byte-identical, except the build time in manifest.json.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import dagster as dg
import pytest

from conftest import materialize_days, tree_digest
from pipelines.definitions import build_definitions
from pipelines.simulator.server import SimulatorServer, _log_item
from support import FIRST, LAST, SNAPSHOT_TABLES, digests, make_world, query, row_counts, small_traffic

RUNS = 3
PUBLIC_TABLES = {"quota_daily", "quota_restatements", "balance_snapshots", "key_snapshots", "prices", "key_owners",
                 "requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "cost_category_monthly",
                 "chargeback_monthly", "inbox_files", "rejects", "anomalies", "model_versions", "rebuild_inputs",
                 "key_ip_daily", "warehouse_files"}
REPLACED_DATASETS = ("request_logs", "gateway_logs", "inbox_records", "inbox_rejects", "inbox_manifest")
APPENDED_DATASETS = ("quota_pulls", "gateway_pulls", "gateway_checks", "balance_snapshots", "key_snapshots")
CSV_HEADER = ["id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
              "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "other"]


@pytest.fixture(scope="module")
def traffic():
    return small_traffic()


@pytest.fixture(scope="module")
def sim(traffic):
    with SimulatorServer(traffic) as server:
        server.mark_restated()  # the world does not change between the runs
        yield server


def add_awkward_input(inbox: Path, traffic) -> None:
    """A rejected line and a duplicate in the client logs; a CSV export with a good and a bad row."""
    logged = next(inbox.glob("team-a-prod/*.jsonl")).read_text().splitlines()[0]
    (inbox / "team-a-prod" / "resent.jsonl").write_text(f"{logged}\n{{\"response\": \n")
    row = next(r for r in traffic.requests_for_day(LAST) if r.log_type == 2 and r.correction_of is None)
    good = _log_item(0, row)
    bad = good | {"token_name": "", "quota": 100}  # spend without a key: missing_key_name
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_HEADER, extrasaction="ignore")
    writer.writeheader()
    writer.writerows([good, bad])
    (inbox / "gateway").mkdir(parents=True, exist_ok=True)
    (inbox / "gateway" / "export.csv").write_text(out.getvalue())


def daily_assets(settings) -> set[str]:
    job = build_definitions(settings).resolve_job_def("daily_ledger")
    return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


def lake_state(lake: Path) -> dict:
    replaced = {d: tree_digest(lake / d) for d in REPLACED_DATASETS}
    appended = {d: len(list((lake / d).glob("*/*.parquet"))) for d in APPENDED_DATASETS}
    return {"replaced": replaced, "appended": appended}


def test_three_runs_of_every_asset_give_identical_tables(tmp_path, sim, traffic):
    world = make_world(tmp_path / "world", sim, traffic)
    settings = world.settings
    add_awkward_input(settings.inbox, traffic)
    every_asset = daily_assets(settings)

    hashes, counts, lakes = [], [], []
    for _ in range(RUNS):
        result = materialize_days(settings, FIRST, LAST)
        assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == every_asset
        hashes.append(digests(settings.warehouse_path, one_home=True))
        counts.append(row_counts(settings.warehouse_path))
        lakes.append(lake_state(settings.lake))

    # the awkward input really is in there: rejects from both sources, a duplicate, the CSV row deduped
    assert {source for (source,) in query(settings.warehouse_path, "SELECT DISTINCT source FROM rejects")} == {
        "client_log", "gateway_csv"}
    assert query(settings.warehouse_path, "SELECT sum(duplicates) FROM inbox_files") == [(1,)]

    assert set(hashes[0]) >= PUBLIC_TABLES  # every table there is (a new one is compared automatically)
    for run in range(1, RUNS):
        changed = sorted(t for t in hashes[0] if hashes[run].get(t) != hashes[0][t])
        assert changed == [] and hashes[run].keys() == hashes[0].keys(), f"run {run + 1} changed {changed}"
        assert lakes[run]["replaced"] == lakes[0]["replaced"]
    keys = len(query(settings.warehouse_path, "SELECT DISTINCT key_name FROM key_snapshots"))
    assert [c["balance_snapshots"] for c in counts] == [1, 2, 3]  # one point-in-time snapshot per run
    assert [c["key_snapshots"] for c in counts] == [keys, 2 * keys, 3 * keys]
    for table in counts[0].keys() - set(SNAPSHOT_TABLES):
        assert {c[table] for c in counts} == {counts[0][table]}, table
    for dataset in APPENDED_DATASETS:  # every pull and snapshot is kept: exactly one more per run
        first = lakes[0]["appended"][dataset]
        assert [lake["appended"][dataset] for lake in lakes] == [first, 2 * first, 3 * first], dataset

    # the review pack (the reports asset), three times from that warehouse
    job = build_definitions(settings).resolve_job_def("monthly_review")
    packs = []
    for _ in range(RUNS):
        month = f"{FIRST:%Y-%m}-01"
        assert job.execute_in_process(partition_key=month, instance=dg.DagsterInstance.ephemeral()).success
        pack = settings.reports / f"review-{FIRST:%Y-%m}"
        files = tree_digest(pack)
        manifest = json.loads((pack / "manifest.json").read_text())
        files["manifest.json"] = json.dumps({k: v for k, v in manifest.items() if k != "built_at"}, sort_keys=True)
        packs.append(files)
    assert len(packs[0]) >= 6 and packs[1] == packs[0] and packs[2] == packs[0]
