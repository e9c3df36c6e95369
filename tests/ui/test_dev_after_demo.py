"""`make demo`, then `make dev`: the Dagster UI shows what the demo did, and prices the way it did.

The demo runs as `make demo` runs it (`comet-ledger demo`, in its own process, in a fresh data home,
with `DAGSTER_HOME` in the home as the Makefile sets it); then `comet-ledger dev` starts the UI on a
free loopback port against the same home, and its GraphQL API is asked what it shows: the demo's
runs, its two review packs (the last complete month's, and the current month's, labelled partial)
as partitions of `reports/review_pack`, its smoke test as a materialisation of `smoke_tests`, and
the price file its runs would use, which must be the one the demo priced with. Finally a run as the
UI would launch it (the definitions Dagster loads, against the simulated world `dev` serves)
re-materialises the demo's last days and must leave every reconciliation status as it was.

The suite's clock is 2026-11-03 06:15 UTC: the demo's 8 days are 2026-10-26 .. 2026-11-02.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from conftest import stop_process_group
from pipelines.definitions import build_definitions
from pipelines.defs.schedules import partition_range_tags
from pipelines.lib.settings import load_settings
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic
from ui.conftest import REPO

DAYS = 8
FIRST, LAST = date(2026, 10, 26), date(2026, 11, 2)
START_TIMEOUT_S = 240.0  # `dagster dev` starts a webserver, a daemon and a code server

QUERY = """
query Demo($location: String!, $repository: String!) {
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message }
      ... on RepositoryLocation { repositories { name } } } } } }
  runsOrError { ... on Runs { results { runId status jobName } } }
  pack: assetOrError(assetKey: {path: ["reports", "review_pack"]}) {
    ... on Asset { assetMaterializations { partition runId metadataEntries { label ...Values } } } }
  smoke: assetOrError(assetKey: {path: ["warehouse", "smoke_tests"]}) {
    ... on Asset { assetMaterializations { runId metadataEntries { label ...Values } } } }
  ledger: topLevelResourceDetailsOrError(resourceSelector: {repositoryLocationName: $location,
      repositoryName: $repository, resourceName: "ledger"}) {
    __typename ... on ResourceDetails { configuredValues { key value } } ... on PythonError { message } }
}
fragment Values on MetadataEntry {
  ... on TextMetadataEntry { text }
  ... on BoolMetadataEntry { boolValue }
  ... on IntMetadataEntry { intValue }
}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def entries(materialization: dict) -> dict:
    out = {}
    for entry in materialization["metadataEntries"]:
        values = [v for k, v in entry.items() if k != "label"]
        out[entry["label"]] = values[0] if values else None
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A demo home made by `comet-ledger demo`, and what `comet-ledger dev` then shows of it."""
    root = tmp_path_factory.mktemp("demo-then-dev")
    cwd = root / "checkout"  # what dev needs of a checkout, and no `.env` to pick up
    cwd.mkdir()
    for name in ("workspace.yaml", "config"):
        (cwd / name).symlink_to(REPO / name)
    home = root / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("COMET_LEDGER_", "COMETAPI_", "DAGSTER_"))},
           "COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"], "COMET_LEDGER_HOME": str(home),
           "DAGSTER_HOME": str(home / "dagster")}
    demo = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--days", str(DAYS), "--json"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout)

    port = free_port()
    log = root / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "dev", "--port", str(port)], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answer = ask(port, dev, log)
    finally:
        stop_process_group(dev, 30, naming=home)  # and the code servers, each in a session of its own
    return {"home": home, "env": env, "demo": summary, "ui": answer, "dev_log": log.read_text()}


def ask(port: int, dev: subprocess.Popen, log: Path) -> dict:
    """The UI's answer to QUERY once the code location has loaded."""
    url = f"http://127.0.0.1:{port}/graphql"
    location, repository = "pipelines.definitions", "__repository__"
    deadline, answer = time.monotonic() + START_TIMEOUT_S, None
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            pytest.fail(f"comet-ledger dev exited with {dev.returncode}: {log.read_text()[-3000:]}")
        try:
            answer = httpx.post(url, json={"query": QUERY, "variables": {"location": location,
                                                                         "repository": repository}}, timeout=30).json()
        except (httpx.TransportError, ValueError):
            time.sleep(0.5)
            continue
        entries_ = ((answer.get("data") or {}).get("workspaceOrError") or {}).get("locationEntries") or []
        if entries_ and all(e["loadStatus"] == "LOADED" for e in entries_):
            [entry] = entries_
            assert entry["name"] == location, entry
            assert entry["locationOrLoadError"]["repositories"][0]["name"] == repository
            return answer["data"]
        time.sleep(0.5)
    pytest.fail(f"the UI did not load in {START_TIMEOUT_S:.0f} s; last answer {answer}; log: {log.read_text()[-3000:]}")


def test_the_demo_builds_the_last_complete_month_and_the_partial_current_one(world):
    demo = world["demo"]
    assert (demo["first_day"], demo["last_day"]) == (FIRST.isoformat(), LAST.isoformat())
    assert demo["review_pack"]["month"] == "2026-10" and "Data covers 6 of 31 days" in demo["review_pack"]["coverage"]
    assert demo["partial_review_pack"]["month"] == "2026-11"
    packs = world["home"] / "reports"
    assert "(partial month)" not in (packs / "review-2026-10" / "reconciliation.md").read_text().splitlines()[0]
    assert (packs / "review-2026-11" / "reconciliation.md").read_text().startswith(
        "# Budget review evidence pack: 2026-11 (partial month)\n")
    assert demo["smoke_test"] == {"passed": True, "failures": []} and demo["matches_simulator"] is True


def test_the_ui_shows_the_demos_runs_packs_and_smoke_test(world):
    ui, demo = world["ui"], world["demo"]
    runs = {r["runId"]: r for r in ui["runsOrError"]["results"]}
    assert set(demo["run_ids"]) <= set(runs) and len(demo["run_ids"]) == 2
    assert all(runs[run_id]["status"] == "SUCCESS" and runs[run_id]["jobName"] == "daily_ledger"
               for run_id in demo["run_ids"])
    packs = {m["partition"]: entries(m) for m in ui["pack"]["assetMaterializations"]}
    assert set(packs) == {"2026-10-01", "2026-11-01"}  # both partitions filled, by the command line
    assert packs["2026-10-01"]["path"] == str(world["home"] / "reports" / "review-2026-10")
    assert (packs["2026-10-01"]["partial_month"], packs["2026-11-01"]["partial_month"]) == (False, True)
    assert packs["2026-10-01"]["coverage"] == demo["review_pack"]["coverage"]
    [smoke] = ui["smoke"]["assetMaterializations"]
    assert entries(smoke)["passed"] is True and smoke["runId"] == ""  # recorded, not run by Dagster
    with duckdb.connect(str(world["home"] / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), bool_and(passed) FROM smoke_tests").fetchone() == (1, True)


def test_the_ui_prices_from_the_sources_the_demo_priced_with(world):
    ledger = world["ui"]["ledger"]
    assert ledger["__typename"] == "ResourceDetails", ledger
    values = {v["key"]: v["value"] for v in ledger["configuredValues"]}
    # no price file of its own: the simulated gateway's ledger and catalog
    assert json.loads(values["price_sources"]) == "ledger,catalog"
    assert not (world["home"] / "demo" / "prices.csv").exists()
    assert "simulator on http://127.0.0.1:" in world["dev_log"] and f"{DAYS} days of traffic from {FIRST}" in world["dev_log"]


def test_a_run_launched_as_the_ui_would_keeps_the_demos_reconciliation(world, monkeypatch):
    """The definitions Dagster loads in the demo's home, run against the world `dev` simulates, over
    the demo's last four days: the same statuses as the demo's (with config/prices.csv they were not)."""
    settings = load_settings(env=world["env"])

    def statuses() -> list[tuple]:
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            return con.execute("SELECT usage_date, key_name, status, estimated_cost_usd FROM recon_key_daily "
                               "ORDER BY ALL").fetchall()

    before = statuses()
    assert {status for _, _, status, _ in before} >= {"matched"}
    traffic = generate_traffic(seed=7, start=FIRST, days=DAYS)
    with SimulatorServer(traffic) as sim:
        sim.mark_restated()  # the demo pulled the restatement already, as `dev` finds
        for name, value in {"COMETAPI_KEY": sim.api_key, "COMETAPI_ACCESS_TOKEN": sim.access_token}.items():
            monkeypatch.setenv(name, value)
        ui_settings = load_settings(env={**world["env"], "COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url,
                                         "COMETAPI_KEY": sim.api_key, "COMETAPI_ACCESS_TOKEN": sim.access_token})
        assert ui_settings.price_sources == ("ledger", "catalog")
        job = build_definitions(ui_settings).resolve_job_def("daily_ledger")
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                        tags=partition_range_tags((LAST - timedelta(days=3)).isoformat(),
                                                                  LAST.isoformat()))
    assert result.success
    assert statuses() == before
