"""Concurrency: several writers at once, and an analyst reading throughout. No lock errors, no lost
and no duplicated rows.

The cases (docs/reliability.md counts them):

1. processes opening a NEW Dagster home at the same instant (forked after import, released by a
   barrier): every one gets a working instance. Dagster's SQLite storages create their tables on
   first use without a guard; before `pipelines/runs.py` serialised that step, every run of this
   test failed with "table ... already exists" or an alembic_version conflict;
2. two `comet-ledger run --date D` processes started at once on one COMET_LEDGER_HOME and a new
   DAGSTER_HOME: both exit 0, their Dagster runs overlap in time, neither prints a lock error, and
   every table equals the one a single uninterrupted run builds;
3. a backfill whose partitions run in parallel: one `dagster asset materialize --partition D` per
   day, all launched at once, each run on Dagster's multiprocess executor (its steps are processes
   of their own, so up to four processes write the lake and queue for the warehouse at once): all
   succeed, their runs overlap, and the warehouse equals a single run over the same days. `make test`
   runs two days, each run being every partition-level publish (the quota pull and everything
   downstream); the full form (`-m slow`) runs all six days, each the whole daily job;
4. the same partitions finished out of order (the later days first), which parallel runs may do,
   made deterministic: equal to one run in order (anomalies judge a day against the days before it);
5. an analyst's read-only connection (in another process) held open across a full `daily_ledger`
   run, reconciliation and anomalies included, while a second reader keeps opening fresh
   connections: no failure on either side; the held session keeps its consistent view, a fresh one
   sees the new data.

The simulator's planted restatement is marked as already pulled, so every pull of every run sees
the same figures and the runs are comparable. Equality with the reference run is checked on every
table (time-dependent columns aside, see support.TIME_COLUMNS); "no lost or duplicated rows" is also
checked directly (support.invariants): quota_daily equals the simulator's daily_quota, requests holds
each request_id once, recon_key_daily one row per key-day, and the snapshot tables one snapshot per
run that took one (none lost).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from conftest import materialize_days
from pipelines.simulator.server import SimulatorServer
from pipelines.runs import ensure_dagster_home
from support import (
    FIRST,
    LAST,
    LOCK_ERRORS,
    cli,
    contents,
    differing,
    invariants,
    make_world,
    query,
    row_counts,
    run_selection,
    small_traffic,
)

# The daily_ledger job's assets: everything but the smoke test (checks) and the review pack (reports).
DAILY_SELECTION = "not group:checks and not group:reports"
# Every partition's own warehouse publishes: lake/quota_daily and all downstream of it (the quota
# tables, reconciliation, anomalies), the monthly review pack excepted.
QUOTA_DOWNSTREAM = 'key:"lake/quota_daily"+ and not group:reports'
# Dagster's multiprocess executor, its steps forked from a server that has imported the project once
# (the default, spawn, re-imports everything for each of the 11 steps and takes 3x as long).
MULTIPROCESS = {"execution": {"config": {"multiprocess": {
    "max_concurrent": 2, "start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}}}}}}


@pytest.fixture(scope="module")
def traffic():
    return small_traffic()


@pytest.fixture(scope="module")
def sim(traffic):
    with SimulatorServer(traffic) as server:
        server.mark_restated()  # every pull sees the same figures: runs are comparable
        yield server


def overlapping_runs(dagster_home: Path, expected: int) -> list[tuple[float, float]]:
    """(start, end) of every run recorded in the instance; asserts they all overlap one another."""
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        records = instance.get_run_records()
        spans = sorted((r.start_time, r.end_time) for r in records)
        assert [r.dagster_run.status for r in records] == [dg.DagsterRunStatus.SUCCESS] * expected
    finally:
        instance.dispose()
    assert len(spans) == expected and all(start and end for start, end in spans)
    assert max(start for start, _ in spans) < min(end for _, end in spans), f"the runs did not overlap: {spans}"
    return spans


def reference(root: Path, sim, traffic, first: date, last: date) -> dict:
    """One uninterrupted in-process run of [first, last] in a home of its own: what must come out."""
    world = make_world(root, sim, traffic)
    materialize_days(world.settings, first, last)
    return contents(world.settings.warehouse_path)


# The reporting days the concurrent cases write (the full form of case 3: the whole world).
WINDOW = (LAST - timedelta(days=1), LAST)


@pytest.fixture(scope="module")
def expected(tmp_path_factory, sim, traffic) -> dict:
    """What a single uninterrupted run of WINDOW builds (shared by cases 2 and 3)."""
    return reference(tmp_path_factory.mktemp("reference"), sim, traffic, *WINDOW)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, sim, traffic) -> dict:
    """What a single uninterrupted run of the whole world builds."""
    return reference(tmp_path_factory.mktemp("whole"), sim, traffic, FIRST, LAST)


# --- 1. a new Dagster home opened by several processes at once ------------------------------------

OPEN_AT_ONCE = textwrap.dedent(
    """
    import multiprocessing as mp, os, sys, tempfile
    from pathlib import Path
    import dagster  # imported once, before the fork: the children start together
    from pipelines import runs
    from pipelines.lib.settings import load_settings

    def child(home, barrier, results):
        os.environ["DAGSTER_HOME"] = str(home / "dagster")
        settings = load_settings(env={"COMET_LEDGER_HOME": str(home)})
        barrier.wait()
        try:
            runs.instance_for(settings).get_runs(limit=1)
            results.put("ok")
        except Exception as exc:
            results.put(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")

    ctx = mp.get_context("fork")
    rounds, processes = int(sys.argv[1]), int(sys.argv[2])
    outcomes = []
    for _ in range(rounds):
        home = Path(tempfile.mkdtemp(dir=sys.argv[3]))
        barrier, results = ctx.Barrier(processes), ctx.Queue()
        children = [ctx.Process(target=child, args=(home, barrier, results)) for _ in range(processes)]
        for c in children:
            c.start()
        outcomes += [results.get(timeout=120) for _ in children]
        for c in children:
            c.join(30)
    print("\\n".join(outcomes))
    """
)


def test_processes_opening_a_new_dagster_home_at_once_all_get_an_instance(tmp_path):
    rounds, processes = 2, 3
    done = subprocess.run([sys.executable, "-c", OPEN_AT_ONCE, str(rounds), str(processes), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = done.stdout.splitlines()
    assert [o for o in outcomes if o != "ok"] == []  # before the fix: "table runs already exists" and kin
    assert len(outcomes) == rounds * processes


def assert_as_one_run_left_it(warehouse, sim, first: date, last: date, expected: dict) -> None:
    """The warehouse holds what one run alone leaves (`expected`), with every invariant intact."""
    found = invariants(warehouse, sim.truth(), first, last)
    assert found == {"quota_daily_equals_simulator": True, "requests": len(expected["requests"]),
                     "duplicated_request_ids": 0, "duplicated_recon_key_days": 0,
                     "recon_covers_reported_key_days": True}
    assert differing(contents(warehouse), expected) == {}


# --- 2. two `comet-ledger run` processes at once ---------------------------------------------------

def test_two_cli_runs_started_at_once_both_succeed_and_lose_or_duplicate_nothing(tmp_path, sim, traffic,
                                                                                expected):
    first, last = WINDOW
    world = make_world(tmp_path / "concurrent", sim, traffic)
    assert not world.dagster_home.exists()  # a new Dagster home: its first-use set-up races too
    command = cli("run", "--date", last.isoformat(), "--repull", str((last - first).days))
    runs = [subprocess.Popen(command, env=world.env(), cwd=world.root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=240) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, err
        assert not LOCK_ERRORS.search(err + out), err
        assert err.strip().splitlines() == [f"materialising {first} .. {last} (re-pulling {(last - first).days} "
                                            "earlier day(s))"]
        key_days = sum(first <= day <= last for day, _ in sim.truth())
        assert out.splitlines()[-1].split()[:2] == ["total", str(key_days)]  # each printed the whole window
    overlapping_runs(world.dagster_home, expected=2)

    warehouse = world.settings.warehouse_path
    assert_as_one_run_left_it(warehouse, sim, first, last, expected)
    counts = row_counts(warehouse)
    assert counts["balance_snapshots"] == 2  # one snapshot per run, neither lost
    assert counts["key_snapshots"] == 2 * len(query(warehouse, "SELECT DISTINCT key_name FROM key_snapshots"))
    assert not list(world.home.glob("warehouse.duckdb.build*"))  # no private copy left behind


# --- 3. partitions in parallel, each run on the multiprocess executor ------------------------------

def materialize_partitions_at_once(world, selection: str, days: list[date]) -> list[tuple[int, str]]:
    """One `dagster asset materialize --partition D` per day, all started at once."""
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
               "--select", selection, "--config-json", json.dumps(MULTIPROCESS), "--partition"]
    runs = [subprocess.Popen([*command, day.isoformat()], env=world.env(), cwd=world.root,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for day in days]
    return [(run.wait(timeout=600), run.stdout.read()) for run in runs]


def check_parallel_backfill(tmp_path, sim, traffic, days: list[date], selection: str, expected: dict) -> None:
    world = make_world(tmp_path / "parallel", sim, traffic)
    first, last = min(days), max(days)
    if selection != DAILY_SELECTION:  # the rest of the daily job, once, before the parallel runs
        run_selection(world.settings, dg.AssetSelection.from_string(DAILY_SELECTION)
                      - dg.AssetSelection.from_string(selection), first, last)
    # Dagster's CLI opens the instance before any project code runs; like any deployment, the home
    # is set up once beforehand (the first-use race of case 1 is Dagster's own).
    ensure_dagster_home(world.dagster_home)
    dg.DagsterInstance.from_config(str(world.dagster_home)).dispose()

    started = time.monotonic()
    results = materialize_partitions_at_once(world, selection, days)
    for code, log in results:
        assert code == 0, log[-3000:]
        assert "Multiprocess executor: parent process exiting" in log and "RUN_SUCCESS" in log
        failures = [line for line in log.splitlines() if LOCK_ERRORS.search(line)]
        assert failures == [], failures[:5]
    overlapping_runs(world.dagster_home, expected=len(days))
    print(f"{len(days)} partition runs in parallel: {time.monotonic() - started:.1f} s")

    warehouse = world.settings.warehouse_path
    assert_as_one_run_left_it(warehouse, sim, first, last, expected)
    snapshots = len(days) if selection == DAILY_SELECTION else 1
    assert row_counts(warehouse)["balance_snapshots"] == snapshots  # one per run that took one, none lost


def test_partitions_run_in_parallel_on_the_multiprocess_executor(tmp_path, sim, traffic, expected):
    """Reduced form: two days at once, each run materialising `lake/quota_daily` and everything
    downstream of it (QUOTA_DOWNSTREAM: quota pull, quota tables, reconciliation, anomalies: every warehouse publish of
    a partition); the unpartitioned inputs (inbox, config, ledger pull, snapshots) are built first."""
    days = [WINDOW[0] + timedelta(days=i) for i in range((WINDOW[1] - WINDOW[0]).days + 1)]
    check_parallel_backfill(tmp_path, sim, traffic, days, QUOTA_DOWNSTREAM, expected)


@pytest.mark.slow
def test_every_partition_of_the_world_in_parallel(tmp_path, sim, traffic, whole):
    """Full form: all six days at once, each run the whole daily job on the multiprocess executor."""
    days = [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)]
    check_parallel_backfill(tmp_path, sim, traffic, days, DAILY_SELECTION, whole)


# --- 4. partitions finished out of order --------------------------------------------------------------

def test_partitions_finished_out_of_order_equal_one_run_in_order(tmp_path, sim, traffic, whole):
    """What parallel partitions can do, made deterministic: the later days are published first. A
    finding judges its day against the days before it, so the earlier days arriving last must re-judge
    the later ones (before the fix in the anomalies asset, a spurious new_source_ip stayed on day 5)."""
    world = make_world(tmp_path / "out-of-order", sim, traffic)
    middle = FIRST + timedelta(days=3)
    materialize_days(world.settings, middle, LAST)
    materialize_days(world.settings, FIRST, middle - timedelta(days=1))
    assert differing(contents(world.settings.warehouse_path), whole) == {}


# --- 5. an analyst reading throughout a full run ----------------------------------------------------

ANALYST = textwrap.dedent(
    """
    import json, sys, threading, duckdb
    path = sys.argv[1]
    QUERIES = {
        "quota": "SELECT count(*), sum(reported_cost_usd) FROM quota_daily",
        "requests": "SELECT count(*), count(DISTINCT request_id) FROM requests",
        "recon": "SELECT count(*), sum(reported_cost_usd), string_agg(DISTINCT status, ',' ORDER BY status) "
                 "FROM recon_key_daily",
        "marts": "SELECT (SELECT sum(allocated_cost_usd) FROM cost_model_daily), "
                 "(SELECT sum(reported_cost_usd) FROM chargeback_monthly), (SELECT count(*) FROM anomalies)",
    }
    def view(con):
        return {name: [str(v) for v in con.execute(sql).fetchone()] for name, sql in QUERIES.items()}

    held = duckdb.connect(path, read_only=True)  # the analyst's session, open throughout
    before = view(held)
    stop, polls, errors = threading.Event(), [0], []
    def poll():  # a second reader: a fresh connection for every query, all through the run
        while not stop.is_set():
            try:
                with duckdb.connect(path, read_only=True) as con:
                    view(con)
                polls[0] += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    poller = threading.Thread(target=poll)
    poller.start()
    print("opened", flush=True)
    sys.stdin.readline()  # until the run is over
    stop.set()
    poller.join()
    after = view(held)
    held.close()
    with duckdb.connect(path, read_only=True) as fresh:
        now = view(fresh)
    print(json.dumps({"before": before, "after": after, "fresh": now, "polls": polls[0], "errors": errors}))
    """
)


def test_an_analyst_held_open_across_a_full_run_neither_fails_nor_blocks_it(tmp_path, sim, traffic):
    world = make_world(tmp_path / "analyst", sim, traffic)
    settings = world.settings
    materialize_days(settings, FIRST, FIRST + timedelta(days=2))  # something to read
    analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(settings.warehouse_path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert analyst.stdout.readline().strip() == "opened"
        result = materialize_days(settings, FIRST, LAST)  # every asset of daily_ledger, reconciliation included
        assert result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"warehouse/recon_key_daily", "warehouse/requests", "warehouse/anomalies",
                "warehouse/chargeback_monthly"} <= materialized
    finally:
        out, err = analyst.communicate("\n", timeout=60)
    assert analyst.returncode == 0, err
    seen = json.loads(out)
    assert seen["errors"] == [] and seen["polls"] > 0
    assert seen["after"] == seen["before"]  # the held session kept its consistent view
    assert seen["fresh"] != seen["before"]  # a new session sees the full run
    [(requests,)] = query(settings.warehouse_path, "SELECT count(*) FROM requests")
    assert seen["fresh"]["requests"] == [str(requests), str(requests)]
    assert invariants(settings.warehouse_path, sim.truth(), FIRST, LAST)["quota_daily_equals_simulator"]
