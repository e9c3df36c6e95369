"""The Dagster UI's view of the code location: `dagster-webserver` started as operators start it
(`-m pipelines.definitions`), on a free loopback port against a temporary DAGSTER_HOME and
COMET_LEDGER_HOME, asked over its GraphQL API what it loaded. Every asset the definitions resolve
must be there with its checks, and so must the schedules and the inbox sensor.

The server runs in its own process group and is always ended; every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import stop_process_group
from pipelines.definitions import build_definitions
from pipelines.lib.settings import load_settings

LOCATION = "pipelines.definitions"
START_TIMEOUT_S = 60.0  # the webserver answers within a few seconds; loading the location takes ~10 s
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")

WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
          ... on RepositoryLocation {
            name
            repositories {
              name
              assetNodes {
                assetKey { path }
                groupName
                metadataEntries {
                  label
                  ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
                  ... on TextMetadataEntry { text }
                }
                assetChecksOrError {
                  __typename
                  ... on AssetChecks { checks { name } }
                }
              }
              schedules { name cronSchedule executionTimezone pipelineName }
              sensors { name targets { pipelineName } }
              jobs { name }
            }
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("webserver")
    (root / "dagster").mkdir()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COMET_LEDGER_", "COMETAPI_", "DAGSTER_"))},
        "DAGSTER_HOME": str(root / "dagster"),
        "COMET_LEDGER_HOME": str(root / "home"),
        "COMETAPI_KEY": "sk-test-not-used",  # nothing is run: the key is only referenced
        "COMETAPI_QUERY_URL": "http://127.0.0.1:9",
        "COMETAPI_API_URL": "http://127.0.0.1:9",
        "COMET_LEDGER_START_DATE": "2026-09-01",
    }


@pytest.fixture(scope="module")
def workspace(env, tmp_path_factory) -> dict:
    """The webserver's answer once the location has loaded (its cwd has no `.env` to pick up)."""
    cwd = tmp_path_factory.mktemp("webserver-cwd")
    port = free_port()
    log = cwd / "webserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(WEBSERVER), "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its code server is a child: the whole group is ended below
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + START_TIMEOUT_S
        answer = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {process.returncode}: {log.read_text()[-3000:]}")
            try:
                response = httpx.post(url, json={"query": WORKSPACE_QUERY}, timeout=10)
            except httpx.TransportError:
                time.sleep(0.25)
                continue
            answer = response.json()
            entries = (answer.get("data") or {}).get("workspaceOrError", {}).get("locationEntries") or []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return answer["data"]["workspaceOrError"]
            time.sleep(0.25)
        pytest.fail(f"the code location did not load in {START_TIMEOUT_S:.0f} s; last answer {answer}; "
                    f"log: {log.read_text()[-3000:]}")
    finally:
        stop_process_group(process, 15, naming=cwd)  # and its code server, in a session of its own


@pytest.fixture(scope="module")
def repository(workspace) -> dict:
    assert workspace["__typename"] == "Workspace", workspace
    [entry] = workspace["locationEntries"]
    assert entry["name"] == LOCATION
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location.get("message")
    [repo] = location["repositories"]
    return repo


@pytest.fixture(scope="module")
def expected(env) -> dict:
    defs = build_definitions(load_settings(env=env))
    graph = defs.resolve_asset_graph()
    checks: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    return {
        "assets": {k.to_user_string() for k in defs.resolve_all_asset_keys()},
        "checks": checks,
        "schedules": {s.name for s in defs.schedules},
        "sensors": {s.name for s in defs.sensors},
        "jobs": {j.name for j in defs.jobs},
    }


def test_every_asset_loads_in_the_webserver(repository, expected):
    loaded = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert loaded == expected["assets"]
    assert {"lake/quota_daily", "warehouse/recon_key_daily", "warehouse/anomalies", "reports/review_pack"} <= loaded
    assert all(node["groupName"] for node in repository["assetNodes"])


def test_every_asset_check_loads_on_its_asset(repository, expected):
    loaded = {}
    for node in repository["assetNodes"]:
        answer = node["assetChecksOrError"]
        assert answer["__typename"] == "AssetChecks", answer
        if answer["checks"]:
            loaded["/".join(node["assetKey"]["path"])] = {c["name"] for c in answer["checks"]}
    assert loaded == expected["checks"]
    assert {"unique_request_ids", "token_invariants"} <= loaded["warehouse/requests"]
    assert "variance_within_tolerance" in loaded["warehouse/recon_key_daily"]


def test_the_schedules_and_the_inbox_sensor_load(repository, expected):
    schedules = {s["name"]: s for s in repository["schedules"]}
    assert set(schedules) == expected["schedules"]
    assert schedules["daily_ledger_schedule"]["pipelineName"] == "daily_ledger"
    assert schedules["daily_ledger_schedule"]["executionTimezone"] == "UTC"
    assert schedules["monthly_review_schedule"]["pipelineName"] == "monthly_review"
    sensors = {s["name"] for s in repository["sensors"]}
    assert sensors == expected["sensors"] and "inbox_sensor" in sensors
    assert {j["name"] for j in repository["jobs"]} >= expected["jobs"]


def test_never_materialised_assets_show_their_columns_and_table_name(repository):
    """The webserver's instance is empty: what it shows comes from the definitions alone."""
    for node in repository["assetNodes"]:
        name = "/".join(node["assetKey"]["path"])
        entries = {e["label"]: e for e in node["metadataEntries"]}
        columns = entries["dagster/column_schema"]["schema"]["columns"]
        assert columns and all(c["name"] and c["type"] for c in columns), name
        if name.startswith("warehouse/"):
            assert entries["dagster/table_name"]["text"] == f"warehouse.main.{node['assetKey']['path'][1]}"
    recon = next(n for n in repository["assetNodes"] if n["assetKey"]["path"] == ["warehouse", "recon_key_daily"])
    columns = {c["name"]: c for c in next(e for e in recon["metadataEntries"]
                                          if e["label"] == "dagster/column_schema")["schema"]["columns"]}
    assert columns["variance_usd"]["description"] == "reported - estimated"
