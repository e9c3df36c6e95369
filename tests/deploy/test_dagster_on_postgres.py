"""Dagster on PostgreSQL, run the way docs/operations.md ("Production recipe") says to run it.

A real PostgreSQL server (Debian's binaries, pg_server.py) gets a `dagster` role and database;
`deploy/dagster.yaml`, copied unchanged, is the instance; the recipe's commands create Dagster's
tables and store the writer pool's limit. Then the three Dagster processes run as the systemd
units start them: `dagster-webserver` and `dagster-daemon run`, each with `-w workspace.yaml`, and
the run workers the daemon launches (one process per run). Two
`daily_ledger` runs are launched at once through the webserver's GraphQL API against the CometAPI
simulator and checked:

- the daemon dequeues and launches both, and both succeed: the warehouse holds the simulator's
  figures for their days;
- the runs, their events and their materialisations are rows of Dagster's tables in PostgreSQL;
- the `duckdb_writer` pool (limit 1, in PostgreSQL) holds: the second run waits in the queue while
  the first runs, and the two never run at once;
- after both services are restarted, nothing is lost: the same runs, events and materialisations,
  the schedule still on, and the new daemon reporting in;
- the backup recipe works: a `pg_dump` restored with `pg_restore` into an empty database is an
  instance Dagster opens with the same runs, materialisations and pool limit;
- the database password appears in no log, no event and no file.

Every process runs in its own process group and is always ended; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest

from conftest import make_settings, outside_libfaketime, table_rows
from pg_server import Database, PostgresMissing, PostgresServer, free_port
from pipelines.definitions import build_definitions
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.schedules import partition_range_tags
from pipelines.lib.settings import load_settings
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "pipelines.definitions"  # workspace.yaml's python_module
REPOSITORY = "__repository__"
JOB = "daily_ledger"
SCHEDULE = "daily_ledger_schedule"
# The database password, as an operator's .env holds it: it must not appear anywhere.
PG_PASSWORD = "pg-LEAKCANARY-3b7e91d04c2a"
CANARY = "LEAKCANARY"

# docs/operations.md, "Backups and restore" (test_the_backup_commands_in_the_doc_are_the_ones_tested).
DUMP_FLAGS = ("--format=custom",)
RESTORE_FLAGS = ("--no-owner", "--exit-on-error")

SIM_START = date(2026, 10, 1)
SIM_DAYS = 4
# Two windows of the daily job, launched at once: each is a whole run of every daily asset.
WINDOWS = [(SIM_START, SIM_START + timedelta(days=1)), (SIM_START + timedelta(days=2), SIM_START + timedelta(days=3))]
# The run worker executes the steps in its own process. The default executor starts a process per
# step that imports the project again (on a busy 2-core machine the two runs took 196 s that way,
# 53 s in process); what a multiprocess run does to the warehouse is test_concurrency.py's subject.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
START_TIMEOUT_S = 90.0  # each process loads the code location (~10 s on a busy machine)
RUN_TIMEOUT_S = 240.0


# --- the servers --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres():
    try:
        server = PostgresServer()
    except PostgresMissing as exc:  # a deployment test never skips: CI installs the server
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(generate_traffic(seed=7, start=SIM_START, days=SIM_DAYS, requests_per_day=10)) as server:
        server.mark_restated()  # both runs see the same figures
        yield server


def pg_env(db: Database) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads (docs/operations.md, the example .env)."""
    return {"DAGSTER_PG_HOST": db.host, "DAGSTER_PG_PORT": str(db.port), "DAGSTER_PG_DB": db.name,
            "DAGSTER_PG_USERNAME": db.user, "DAGSTER_PG_PASSWORD": db.password}


def base_env(root: Path, sim: SimulatorServer, db: Database) -> dict[str, str]:
    prices = root / "prices.csv"
    prices.write_text(prices_csv(SIM_START, SIM_DAYS))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))}
    return outside_libfaketime(inherited) | pg_env(db) | {
        "COMET_LEDGER_HOME": str(root / "home"),
        "DAGSTER_HOME": str(root / "dagster"),
        "COMETAPI_QUERY_URL": sim.url,
        "COMETAPI_API_URL": sim.url,
        "COMETAPI_KEY": sim.api_key,
        "COMETAPI_ACCESS_TOKEN": sim.access_token,
        "COMET_LEDGER_PRICES": str(prices),
        "COMET_LEDGER_KEY_OWNERS": str(REPO / "config" / "key_owners.csv"),
        "COMET_LEDGER_START_DATE": SIM_START.isoformat(),
    }



def install_instance(env: dict[str, str], cwd: Path) -> None:
    """Steps 4 and 5 of the recipe: deploy/dagster.yaml as DAGSTER_HOME/dagster.yaml, then Dagster's
    tables and the writer pool's limit."""
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for command in (["instance", "migrate"], ["instance", "concurrency", "set", WRITER_POOL, "1"]):
        done = subprocess.run([str(BIN / "dagster"), *command], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"dagster {' '.join(command)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"


# --- the services ---------------------------------------------------------------------------------------

INSTALLED = "/opt/comet-ledger"  # where the units expect the repository (docs/operations.md)


def unit_command(name: str, port: int) -> list[str]:
    """ExecStart of deploy/comet-ledger-<name>.service, with this checkout for /opt/comet-ledger and a
    free port for the webserver's 3000."""
    unit = (REPO / "deploy" / f"comet-ledger-{name}.service").read_text()
    [command] = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = [arg.replace(f"{INSTALLED}/.venv/bin", str(BIN)).replace(INSTALLED, str(REPO))
            for arg in shlex.split(command)]
    return [str(port) if arg == "3000" and argv[i - 1] == "-p" else arg for i, arg in enumerate(argv)]


class Services:
    """The webserver and the daemon, started and stopped as systemd would (SIGTERM to the group)."""

    def __init__(self, env: dict[str, str], cwd: Path, db: Database) -> None:
        self.env, self.cwd, self.db = env, cwd, db
        self.port = 0
        self.processes: dict[str, subprocess.Popen] = {}
        self.generation = 0
        self.earlier_daemons: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def log(self, name: str) -> Path:
        return self.cwd / f"{name}-{self.generation}.log"

    def start(self) -> None:
        self.generation += 1
        self.port = free_port()
        self.earlier_daemons = daemon_ids(self.db)
        for name in ("webserver", "daemon"):
            with self.log(name).open("wb") as out:
                self.processes[name] = subprocess.Popen(
                    unit_command(name, self.port), cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_until_ready()

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):  # whatever is left in the group: code servers, run workers
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
        self.processes = {}

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(self.url, json={"query": query, "variables": variables or {}}, timeout=30)
        answer = response.json()
        assert "errors" not in answer, answer["errors"]
        return answer["data"]

    def wait_until_ready(self) -> None:
        """The code location loaded in the webserver, and the daemon's run queue reporting in to it."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(f"{name} exited with {process.returncode}: {self.log(name).read_text()[-3000:]}")
            try:
                last = self.graphql(READY_QUERY)
            except (httpx.TransportError, ValueError):
                time.sleep(0.5)
                continue
            entries = last["workspaceOrError"].get("locationEntries") or []
            errors = [e["locationOrLoadError"] for e in entries
                      if e["loadStatus"] == "LOADED" and e["locationOrLoadError"]["__typename"] == "PythonError"]
            if errors:
                pytest.fail(f"the code location did not load: {errors[0]['message'][-3000:]}")
            daemons = {d["daemonType"]: d["healthy"] for d in last["instance"]["daemonHealth"]["allDaemonStatuses"]}
            # A heartbeat of this daemon, not of the one stopped before it.
            queue = "QUEUED_RUN_COORDINATOR"
            fresh = daemons.get(queue) and daemon_ids(self.db, queue) - self.earlier_daemons
            if entries and all(e["loadStatus"] == "LOADED" for e in entries) and fresh:
                return
            time.sleep(0.5)
        pytest.fail(f"the services were not ready in {START_TIMEOUT_S:.0f} s; last answer {last}; "
                    f"daemon log: {self.log('daemon').read_text()[-2000:]}")


READY_QUERY = """
query Ready {
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUNS = """
query Runs {
  runsOrError {
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""

SCHEDULE_STATE = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    ... on Schedule { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""

SCHEDULE_SELECTOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "scheduleName": SCHEDULE}


def launch(services: Services, first: date, last: date) -> str:
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": JOB},
        "runConfigData": IN_PROCESS,
        "executionMetadata": {"tags": [{"key": k, "value": v}
                                       for k, v in partition_range_tags(first.isoformat(), last.isoformat()).items()]},
    }
    answer = services.graphql(LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def runs_by_id(services: Services) -> dict[str, dict]:
    return {r["runId"]: r for r in services.graphql(RUNS)["runsOrError"]["results"]}


def wait_for_runs(services: Services, run_ids: list[str]) -> list[tuple[float, dict[str, str]]]:
    """Poll until every run has ended; returns the statuses seen at each poll."""
    seen = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = runs_by_id(services)
        statuses = {run_id: runs[run_id]["status"] for run_id in run_ids}
        seen.append((time.monotonic(), statuses))
        if all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses.values()):
            return seen
        time.sleep(0.5)
    pytest.fail(f"the runs did not end in {RUN_TIMEOUT_S:.0f} s: {seen[-1][1]}; "
                f"daemon log: {services.log('daemon').read_text()[-3000:]}")


# --- what PostgreSQL holds ------------------------------------------------------------------------------

def stored(db: Database, run_ids: list[str]) -> dict:
    """Dagster's records of the runs, read straight from its tables."""
    runs = {run_id: (status, start, end) for run_id, status, start, end in db.query(
        "SELECT run_id, status, start_time, end_time FROM runs WHERE run_id = ANY(%s)", (run_ids,))}
    events = dict(db.query("SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id",
                           (run_ids,)))
    # The process each run's steps ran in, as its RUN_START event records it.
    workers = {run_id: dg.deserialize_value(event).dagster_event.pid for run_id, event in db.query(
        "SELECT run_id, event FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = %s",
        (run_ids, dg.DagsterEventType.RUN_START.value))}
    materialized = {}
    for run_id, asset_key in db.query(
            "SELECT run_id, asset_key FROM event_logs WHERE run_id = ANY(%s) "
            "AND dagster_event_type = %s", (run_ids, dg.DagsterEventType.ASSET_MATERIALIZATION.value)):
        materialized.setdefault(run_id, []).append(asset_key)
    return {"runs": runs, "events": events, "workers": workers,
            "materialized": {run_id: sorted(keys) for run_id, keys in materialized.items()},
            "asset_keys": {k for (k,) in db.query("SELECT asset_key FROM asset_keys")},
            "pool_limits": dict(db.query('SELECT concurrency_key, "limit" FROM concurrency_limits'))}


def daemon_ids(db: Database, daemon_type: str | None = None) -> set[str]:
    """The daemons that have reported in (each `dagster-daemon` process has an id of its own)."""
    rows = db.query("SELECT daemon_type, daemon_id FROM daemon_heartbeats")
    return {daemon_id for kind, daemon_id in rows if daemon_type in (None, kind)}


def job_asset_keys(env: dict[str, str]) -> set[str]:
    """The asset keys of the daily job, in the form Dagster's tables store them (a JSON list)."""
    job = build_definitions(load_settings(env=env)).resolve_job_def(JOB)
    return {json.dumps(list(key.path)) for key in job.asset_layer.executable_asset_keys}


# --- the test -------------------------------------------------------------------------------------------------

def restore_backup(postgres: PostgresServer, db: Database, tmp_path: Path) -> Database:
    """docs/operations.md, "Backups and restore": pg_dump's custom format, restored by the owner into
    an empty database of its own."""
    dump = tmp_path / "dagster.dump"
    postgres.client("pg_dump", db, *DUMP_FLAGS, f"--file={dump}")
    postgres.create_database("dagster_restored", db.user)
    restored = dataclasses.replace(db, name="dagster_restored")
    postgres.client("pg_restore", restored, *RESTORE_FLAGS, str(dump))
    return restored


def test_the_backup_commands_in_the_doc_are_the_ones_tested():
    """The doc's pg_dump and pg_restore take the flags restore_backup uses, the password from the environment."""
    lines = (REPO / "docs" / "operations.md").read_text().replace("\\\n", " ").splitlines()
    for program, flags in (("pg_dump", DUMP_FLAGS), ("pg_restore", RESTORE_FLAGS)):
        [command] = [line for line in lines if re.match(rf'\s*PGPASSWORD="\$DAGSTER_PG_PASSWORD" {program} ', line)]
        quoted = [t.split("=", 1)[0] if t.startswith(("--file=", "--dbname=")) else t  # paths vary, flags do not
                  for t in shlex.split(command) if t.startswith("--")]
        assert quoted == [*flags, *(["--file"] if program == "pg_dump" else []), "--dbname"], command


def instance_home(home: Path, db: Database, monkeypatch) -> Path:
    """A DAGSTER_HOME with deploy/dagster.yaml, its variables pointing at `db`, for this process."""
    home.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for name, value in pg_env(db).items():
        monkeypatch.setenv(name, value)
    return home


def test_the_daily_job_runs_on_postgres_through_the_daemon_and_survives_restarts(tmp_path, postgres, sim, monkeypatch):
    db = postgres.create_database("dagster", "dagster", PG_PASSWORD)
    env = base_env(tmp_path, sim, db)
    cwd = tmp_path / "cwd"  # the services' working directory: no .env to pick up
    cwd.mkdir()
    install_instance(env, cwd)
    services = Services(env, cwd, db)
    try:
        started = time.monotonic()
        services.start()
        ready = time.monotonic()
        schedule = services.graphql(START_SCHEDULE, {"selector": SCHEDULE_SELECTOR})["startSchedule"]
        assert schedule["__typename"] == "ScheduleStateResult", schedule
        run_ids = [launch(services, first, last) for first, last in WINDOWS]
        polls = wait_for_runs(services, run_ids)
        finished = time.monotonic()
        before = stored(db, run_ids)
        seen_before = runs_by_id(services)
        service_pids = {process.pid for process in services.processes.values()}

        services.stop()
        daemon_before = daemon_ids(db)
        services.start()
        after = stored(db, run_ids)
        seen_after = runs_by_id(services)
        schedule_after = services.graphql(SCHEDULE_STATE, {"selector": SCHEDULE_SELECTOR})["scheduleOrError"]
        daemon_after = daemon_ids(db)
    finally:
        services.stop()
    restored = restore_backup(postgres, db, tmp_path)
    spans = sorted((start, end) for _, start, end in before["runs"].values())
    first = spans[0][0]
    print(f"services ready in {ready - started:.1f} s; two queued runs done in {finished - ready:.1f} s; "
          f"runs (start, end) from the first start: {[(round(s - first, 1), round(e - first, 1)) for s, e in spans]}")

    # Both runs launched by the daemon succeeded and did the job: every key-day of the four days, as
    # the simulator reports it.
    assert [seen_before[r]["status"] for r in run_ids] == ["SUCCESS", "SUCCESS"]
    landed = table_rows(make_settings(tmp_path / "home", sim),
                        "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily")
    assert {(day, key): (cost, n) for day, key, cost, n in landed} == sim.truth()

    # Dagster's records are in PostgreSQL: the runs, their events, every asset of the job materialised.
    expected_keys = job_asset_keys(env)
    assert {r: s for r, (s, _, _) in before["runs"].items()} == {r: "SUCCESS" for r in run_ids}
    assert all(before["events"][r] > 50 for r in run_ids), before["events"]
    # Each run ran in a run worker of its own, neither the daemon nor the webserver.
    assert len(set(before["workers"].values())) == 2 and not set(before["workers"].values()) & service_pids
    for run_id in run_ids:
        assert set(before["materialized"][run_id]) == expected_keys, run_id
    assert expected_keys <= before["asset_keys"]

    # The writer pool: limit 1 stored in PostgreSQL; the second run queued while the first ran, and the
    # two never ran at once.
    assert before["pool_limits"] == {WRITER_POOL: 1}
    assert any(sorted(statuses.values()) == ["QUEUED", "STARTED"] for _, statuses in polls), polls
    assert spans[0][1] <= spans[1][0], f"the runs overlapped: {spans}"

    # Restarted, nothing lost: the same records, the schedule still on, the new daemon reporting in.
    assert after == before
    assert {r: seen_after[r]["status"] for r in run_ids} == {r: seen_before[r]["status"] for r in run_ids}
    assert schedule_after["scheduleState"]["status"] == "RUNNING"
    assert len(daemon_after) == 1 and daemon_after != daemon_before  # the new daemon reports in, to the same table

    # The backup, restored into an empty database, holds the same records, and Dagster opens it.
    assert stored(restored, run_ids) == before
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "restored", restored, monkeypatch))) as instance:
        assert {r.dagster_run.run_id: r.dagster_run.status.value for r in instance.get_run_records()} == {
            r: "SUCCESS" for r in run_ids}
        latest = instance.get_latest_materialization_event(dg.AssetKey(["warehouse", "quota_daily"]))
        assert latest is not None and latest.run_id in run_ids
        assert instance.event_log_storage.get_concurrency_info(WRITER_POOL).slot_count == 1

    # The database password appears in no log, no event and no file.
    leaks = [str(p) for p in tmp_path.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaks == []
    assert db.query("SELECT count(*) FROM event_logs WHERE event LIKE %s", (f"%{CANARY}%",)) == [(0,)]
    assert db.query("SELECT count(*) FROM runs WHERE run_body LIKE %s", (f"%{CANARY}%",)) == [(0,)]
