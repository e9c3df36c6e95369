"""Crash safety: kill -9 the pipeline while it writes the lake and builds the warehouse.

Setup (once per module): a small simulated world (8 reporting days, 10 requests a day) served by the
simulator in this process, client logs in the inbox, and a home where days 1-6 have been run (the
state before the killed run; day 6's client logs had not arrived yet). Then the run under test: days
5-8 (day 8 with the three days before it re-pulled, as the daily schedule does; the inbox has three
new days of client logs, so day 6's requests change, as well as new ones added). An uninterrupted
copy of that run, the reference, says which points it reaches how often and what it publishes.

Each case copies the day-6 home, runs days 5-8 in a child process that SIGKILLs itself at the k-th
arrival at one kill point (`crash_harness.POINTS`; k seeded random), and checks:

1. the previous state is intact:
   - the lake: every visible `*.parquet` opens and reads to its last row; everything else is a
     hidden `.*.tmp`; every file of the day-6 lake is still there;
   - the day files of `requests` (`<home>/warehouse_files`): the same, and every file the day-6
     warehouse lists is still there;
   - the warehouse: no swap done yet -> the published file is byte-identical to the day-6 one;
     n swaps done -> every table equals the n-th state the reference published (time-dependent
     values aside); never a mix. Per table: equal to the day-6 table, or to the reference's final one;
2. a re-run of days 5-8 converges: every table equals the reference's final one (time-dependent
   values aside), the lake is clean as above, no `.build` copy is left.

Time-dependent values, excluded from the "equals the reference" comparisons (the same everywhere):
the columns in `TIME_COLUMNS` (when a pull, snapshot, staging, build or detection happened, and the
ids minted from that moment), and, inside the anomalies' `detail` / `evidence` text, pull and snapshot
ids and date-times (`TEXT_MASKS`). Point-in-time snapshots (`SNAPSHOT_TABLES`) are compared as sets:
a killed run that got as far as taking a snapshot legitimately leaves one more observation of the
same balance. Comparisons with the day-6 state are exact (every column).

`make test` runs a reduced form (`REDUCED_POINTS`: 5 of the 20 kills, lake, warehouse and day files);
the full seeded 20 kills: `.venv/bin/pytest -m slow tests/reliability/test_crashes.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import support
from crash_harness import COUNTS_ENV, CRASH_ENV, INSTANCE_ENV, POINTS, PUBLISHED_ENV
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

HARNESS = Path(__file__).with_name("crash_harness.py")
REPO = Path(__file__).resolve().parents[2]
SIM_START = date(2026, 10, 1)
SIM_DAYS = 8
REQUESTS_PER_DAY = 10
BASE_DAYS = (SIM_START, SIM_START + timedelta(days=5))  # days 1-6: the state before the killed run
RUN_DAYS = (SIM_START + timedelta(days=4), SIM_START + timedelta(days=7))  # days 5-8: the run killed
CHILD_TIMEOUT_S = 300

SEED = 20260006  # issue 6
FULL_KILLS = 20
REDUCED_POINTS = ("lake.mid_write", "lake.after_replace", "warehouse.mid_model", "warehouse.after_day_file",
                  "warehouse.after_swap")

# support.TIME_COLUMNS' columns (when a pull, snapshot, staging, build or detection happened), by name,
# and finding_id: an md5 over evidence that names pull and snapshot ids.
TIME_COLUMNS = frozenset({column for columns in support.TIME_COLUMNS.values() for column in columns} | {"finding_id"})
SNAPSHOT_TABLES = frozenset({"balance_snapshots", "key_snapshots"})
MASKED_TEXT = {"anomalies": ("detail", "evidence")}  # findings name pull/snapshot ids and their moments
TEXT_MASKS = (
    (re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{6}"), "<id>"),  # pull and snapshot ids (quota_lake.new_id)
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z?(?: UTC)?"), "<time>"),  # not plain dates
)


def kill_plan() -> list[tuple[str, float, str]]:
    """20 seeded (point, fraction, Dagster instance) kills: every point once, the rest drawn at random.

    The k of a kill is ceil(fraction x how often the reference run reaches the point), at least 1.
    Every 4th kill runs (and re-runs) with the Dagster instance at DAGSTER_HOME (SQLite, as
    `comet-ledger run` does), so the re-run starts beside the record of a run killed mid-way; the
    others with an in-memory instance (the pipeline's own writes are the same; it saves seconds).
    """
    rng = random.Random(SEED)
    points = sorted(POINTS)
    rng.shuffle(points)
    points += [rng.choice(sorted(POINTS)) for _ in range(FULL_KILLS - len(points))]
    return [(point, round(rng.uniform(0.001, 1.0), 3), "persistent" if i % 4 == 0 else "ephemeral")
            for i, point in enumerate(points, start=1)]


FULL = kill_plan()
# `make test`: 5 of the 20 (at each of REDUCED_POINTS the first in-memory-instance kill, else its first
# kill), for time.
REDUCED = [min((kill for kill in FULL if kill[0] == point), key=lambda kill: kill[2] != "ephemeral")
           for point in REDUCED_POINTS]


def _case_id(form: str, point: str, fraction: float, instance: str) -> str:
    return f"{form}-{point}@{fraction}" + ("-dagster_home" if instance == "persistent" else "")


CASES = [pytest.param(*kill, id=_case_id("reduced", *kill)) for kill in REDUCED] + [
    pytest.param(*kill, id=_case_id(f"full{i:02d}", *kill), marks=pytest.mark.slow)
    for i, kill in enumerate(FULL, start=1)
]


# --- digests --------------------------------------------------------------------------------------
def _mask(value):
    if isinstance(value, str):
        for pattern, replacement in TEXT_MASKS:
            value = pattern.sub(replacement, value)
    return value


def _normalize(row: tuple, columns: list[str], masked: tuple[str, ...]) -> tuple:
    return tuple(_mask(v) if c in masked else v for c, v in zip(columns, row))


def table_digests(warehouse: Path, *, normalized: bool) -> dict[str, str]:
    """Content hash of every table (order-independent). `normalized`: time-dependent values left out
    (see the module docstring); otherwise every column, like `conftest.warehouse_digest`."""
    digests = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [t for (t,) in con.execute(  # tables and views (`requests` is a view over its day files)
            "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary ORDER BY 1").fetchall()]
        for table in tables:
            columns = [c for (c,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = $t ORDER BY column_index",
                {"t": table}).fetchall() if not (normalized and c in TIME_COLUMNS)]
            distinct = "DISTINCT " if normalized and table in SNAPSHOT_TABLES else ""
            rows = con.execute(f'SELECT {distinct}{", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)} '
                               f'FROM "{table}"').fetchall()
            if normalized and table in MASKED_TEXT:
                rows = [_normalize(row, columns, MASKED_TEXT[table]) for row in rows]
            rows.sort(key=repr)
            digests[table] = hashlib.sha256(repr((columns, rows)).encode()).hexdigest()
    return digests


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lake_problems(lake: Path, must_exist: set[str]) -> list[str]:
    """What a reader of the lake could trip over: partial or unreadable files, stray names, lost files."""
    problems = []
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        name = str(path.relative_to(lake))
        if path.name.startswith("."):
            if not path.name.endswith(".tmp"):
                problems.append(f"{name}: a hidden file that is not a temporary")
            continue
        if path.suffix != ".parquet":
            problems.append(f"{name}: visible, not a Parquet file")
            continue
        try:
            parquet = pq.ParquetFile(path)
            if parquet.read().num_rows != parquet.metadata.num_rows:
                problems.append(f"{name}: fewer rows than its footer says")
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{name}: unreadable: {exc}")
    problems += [f"{name}: gone (it was there before the run)" for name in sorted(must_exist)
                 if not (lake / name).is_file()]
    return problems


def visible_lake_files(lake: Path) -> set[str]:
    return {str(p.relative_to(lake)) for p in lake.rglob("*.parquet") if not p.name.startswith(".")}


def snapshot_invariant(warehouse: Path) -> list[tuple]:
    """Per-key snapshots whose balance row (the snapshot's commit marker) is missing."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT DISTINCT snapshot_id FROM key_snapshots "
                           "WHERE snapshot_id NOT IN (SELECT snapshot_id FROM balance_snapshots)").fetchall()


def requests_of(warehouse: Path, day: date) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute("SELECT * FROM requests WHERE usage_date = $d ORDER BY ALL", {"d": day}).fetchall()


def differing(got: dict[str, str], want: dict[str, str]) -> list[str]:
    return sorted(t for t in got.keys() | want.keys() if got.get(t) != want.get(t))


# --- the child processes --------------------------------------------------------------------------
class ForkServer:
    """`crash_harness.py --serve`: imports Dagster once, forks one pipeline process per run."""

    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, str(HARNESS), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=cwd, bufsize=0)
        self.pending = b""

    def _reply(self, child: int | None) -> dict:
        """The next reply line (read from the raw pipe, so a buffered second line is never missed)."""
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.proc.stdout], [], [], CHILD_TIMEOUT_S)
            chunk = os.read(self.proc.stdout.fileno(), 65536) if ready else b""
            if not chunk:
                if child:
                    os.kill(child, signal.SIGKILL)
                raise AssertionError(f"the crash harness did not answer within {CHILD_TIMEOUT_S} s "
                                     f"(fork server exit: {self.proc.poll()})")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, days: tuple[date, date], env: dict[str, str], log: Path) -> int:
        """Exit status of one pipeline run (negative: killed by that signal)."""
        request = {"args": [d.isoformat() for d in days], "env": env, "cwd": str(log.parent), "log": str(log)}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        child = self._reply(None)["pid"]
        return self._reply(child)["exit"]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class World:
    root: Path
    sim: SimulatorServer
    prices: Path
    server: ForkServer
    base: Path = field(init=False)
    base_warehouse_sha: str = ""
    base_exact: dict[str, str] = field(default_factory=dict)
    base_lake: set[str] = field(default_factory=set)
    base_day_files: set[str] = field(default_factory=set)  # the day files the day-6 warehouse lists
    counts: dict[str, int] = field(default_factory=dict)
    published: dict[int, dict[str, str]] = field(default_factory=dict)  # swap n -> normalized digests
    final: dict[str, str] = field(default_factory=dict)  # the reference's end state, normalized

    def env(self, home: Path, **harness: str) -> dict[str, str]:
        """The child's environment: the simulator, this home, nothing inherited from COMET_*/DAGSTER_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMET", "DAGSTER"))}
        env.update(
            COMET_LEDGER_HOME=str(home), DAGSTER_HOME=str(home / "dagster"),
            COMETAPI_QUERY_URL=self.sim.url, COMETAPI_API_URL=self.sim.url,
            COMETAPI_KEY=self.sim.api_key, COMETAPI_ACCESS_TOKEN=self.sim.access_token,
            COMET_LEDGER_PRICES=str(self.prices), COMET_LEDGER_KEY_OWNERS=str(REPO / "config" / "key_owners.csv"),
            COMET_LEDGER_START_DATE="2026-09-01", **harness,
        )
        return env

    def run(self, home: Path, days: tuple[date, date], log_name: str, **harness: str) -> tuple[int, str]:
        log = home.parent / f"{log_name}.log"
        code = self.server.run(days, self.env(home, **harness), log)
        return code, log.read_text() if log.exists() else ""


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("crashes")
    traffic = generate_traffic(seed=7, start=SIM_START, days=SIM_DAYS, requests_per_day=REQUESTS_PER_DAY)
    prices = root / "sim-prices.csv"
    prices.write_text(prices_csv(SIM_START, SIM_DAYS))
    server = ForkServer(root)
    try:
        with SimulatorServer(traffic) as sim:
            w = World(root, sim, prices, server)
            w.base = root / "base" / "home"
            write_inbox(traffic, w.base / "inbox", _days(BASE_DAYS[0], BASE_DAYS[1] - timedelta(days=1)))
            code, log = w.run(w.base, BASE_DAYS, "run", **{INSTANCE_ENV: "ephemeral"})
            assert code == 0, log
            # The base run pulled the planted restatement's day: from now on every pull sees the late
            # correction, so the simulated world no longer changes between runs.
            assert sim.restated
            # day 6's client logs arrive late: the run under test replaces day 6's requests file
            write_inbox(traffic, w.base / "inbox", _days(BASE_DAYS[1], RUN_DAYS[1]))
            w.base_warehouse_sha = file_sha(w.base / "warehouse.duckdb")
            w.base_exact = table_digests(w.base / "warehouse.duckdb", normalized=False)
            w.base_lake = visible_lake_files(w.base / "lake")
            with duckdb.connect(str(w.base / "warehouse.duckdb"), read_only=True) as con:
                w.base_day_files = {f for (f,) in con.execute("SELECT file FROM warehouse_files").fetchall()}
            assert w.base_day_files

            reference = root / "reference" / "home"
            shutil.copytree(w.base, reference)
            published = root / "reference" / "published"
            published.mkdir()
            counts = root / "reference" / "counts.json"
            code, log = w.run(reference, RUN_DAYS, "run", **{INSTANCE_ENV: "ephemeral", COUNTS_ENV: str(counts),
                                                              PUBLISHED_ENV: str(published)})
            assert code == 0, log
            w.counts = json.loads(counts.read_text())
            assert all(w.counts[p] > 0 for p in POINTS), w.counts
            w.published = {n: table_digests(published / f"{n}.duckdb", normalized=True)
                           for n in range(1, w.counts["swaps"] + 1)}
            w.final = table_digests(reference / "warehouse.duckdb", normalized=True)
            assert w.final == w.published[w.counts["swaps"]]
            # the run under test changes the warehouse (else "old or new" would prove nothing)
            base_normalized = table_digests(w.base / "warehouse.duckdb", normalized=True)
            assert {"quota_daily", "requests", "recon_key_daily", "inbox_files", "anomalies"} <= set(
                differing(base_normalized, w.final))
            # day 6's late client logs: the run replaces a day of requests the state before already lists
            day6 = [requests_of(home / "warehouse.duckdb", BASE_DAYS[1]) for home in (w.base, reference)]
            assert day6[0] and day6[0] != day6[1]
            yield w
    finally:
        server.close()


# --- the test -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("point", "fraction", "instance"), CASES)
def test_a_run_killed_at_any_point_leaves_the_previous_state_and_a_rerun_converges(world, tmp_path, point, fraction,
                                                                                    instance):
    k = max(1, math.ceil(fraction * world.counts[point]))
    home = tmp_path / "home"
    shutil.copytree(world.base, home)
    warehouse = home / "warehouse.duckdb"

    code, log = world.run(home, RUN_DAYS, "killed", **{INSTANCE_ENV: instance, CRASH_ENV: f"{point}:{k}"})
    assert code == -signal.SIGKILL, f"expected a kill at {point}:{k}, exit {code}:\n{log[-3000:]}"
    died = re.search(r"killed at (\S+):(\d+) after (\d+) warehouse swap", log)
    assert died and died.group(1, 2) == (point, str(k)), log[-3000:]
    swaps = int(died.group(3))

    # 1. the previous state is intact: no partial file visible, the warehouse a state a run publishes
    assert lake_problems(home / "lake", world.base_lake) == []
    assert lake_problems(home / "warehouse_files", world.base_day_files) == []
    assert not warehouse.with_name(warehouse.name + ".wal").exists()
    if swaps == 0:
        assert file_sha(warehouse) == world.base_warehouse_sha, "killed before its first swap, yet the warehouse changed"
    else:
        now = table_digests(warehouse, normalized=True)
        assert differing(now, world.published[swaps]) == [], (
            f"after {swaps} swap(s) the warehouse is not what an uninterrupted run publishes at that point")
    exact, normalized = table_digests(warehouse, normalized=False), table_digests(warehouse, normalized=True)
    mixed = [t for t in exact.keys() | world.final.keys()
             if exact.get(t) != world.base_exact.get(t) and normalized.get(t) != world.final.get(t)]
    assert mixed == [], f"tables neither as before the run nor as after it: {sorted(mixed)}"
    assert snapshot_invariant(warehouse) == []

    # 2. a re-run converges to what an uninterrupted run gives
    code, log = world.run(home, RUN_DAYS, "rerun", **{INSTANCE_ENV: instance})
    assert code == 0, f"the re-run after a kill at {point}:{k} failed:\n{log[-3000:]}"
    assert lake_problems(home / "lake", world.base_lake) == []
    assert lake_problems(home / "warehouse_files", world.base_day_files) == []
    assert not warehouse.with_name(warehouse.name + ".build").exists()
    assert differing(table_digests(warehouse, normalized=True), world.final) == []
    assert snapshot_invariant(warehouse) == []
    print(f"killed at {point}:{k} of {world.counts[point]} after {swaps} swap(s) of {world.counts['swaps']} "
          f"({instance} Dagster instance): previous state intact, re-run converged")
