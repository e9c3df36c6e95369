"""Shared fixtures: a simulator on loopback, settings pointing at it, and a way to run the assets."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines.definitions import build_definitions
from pipelines.lib import clock
from pipelines.defs.resources import GatewayLedger, QueryService
from pipelines.defs.schedules import partition_range_tags
from pipelines.lib.settings import Settings, load_settings
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

SIM_START = date(2026, 10, 1)
SIM_DAYS = 30
# "Now" for the whole suite and the processes it starts (pipelines/lib/clock.py): the morning of the
# daily run after the simulated month, running on from when the suite started (pulls keep their
# order). A test that needs another instant, or a stopped clock, sets COMET_LEDGER_NOW itself.
PINNED_NOW = "2026-11-03T06:15:00+00:00"
os.environ["COMET_LEDGER_NOW"] = clock.running_from(PINNED_NOW)


# The files whose tests take longest (minutes each: whole CLI runs, the docs' commands, Dagster
# processes) are started first. With a few workers, a long test collected last leaves the others
# idle at the end of the run; started first, the short tests fill in around it. Only the order changes:
# within a file tests keep their order, and no test depends on another.
LONG_FIRST = (
    "tests/test_docs_commands.py", "tests/test_cli.py", "tests/ui/test_dev_after_demo.py",
    "tests/deploy/", "tests/defs/test_request_log_assets.py", "tests/defs/test_secrets.py",
    "tests/reliability/",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = Path(str(item.fspath)).relative_to(Path(__file__).resolve().parents[1]).as_posix()
        return next((i for i, start in enumerate(LONG_FIRST) if path.startswith(start)), len(LONG_FIRST))

    items.sort(key=rank)


@pytest.fixture(scope="session")
def traffic():
    return generate_traffic(seed=7, start=SIM_START, days=SIM_DAYS)


@pytest.fixture
def sim(traffic):
    with SimulatorServer(traffic) as server:
        yield server


def make_settings(home: Path, sim: SimulatorServer, **env: str) -> Settings:
    return load_settings(
        env={
            "COMET_LEDGER_HOME": str(home),
            "COMETAPI_QUERY_URL": sim.url,
            "COMETAPI_API_URL": sim.url,
            "COMETAPI_KEY": sim.api_key,
            "COMET_LEDGER_START_DATE": "2026-09-01",
            **env,
        }
    )


@pytest.fixture
def settings(tmp_path, sim, monkeypatch) -> Settings:
    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    return make_settings(tmp_path / "home", sim)


def materialize_days(settings: Settings, first: date, last: date, *, raise_on_error: bool = True,
                     base_delay_s: float = 0.01, timeout_s: float = 5.0, max_attempts: int = 5,
                     instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Every asset for [first, last] in one run, with fast retries so fault tests do not wait."""
    fast = {"base_delay_s": base_delay_s, "timeout_s": timeout_s, "max_attempts": max_attempts}
    resources = {
        "query_service": QueryService(base_url=settings.query_url, api_key=settings.api_key, **fast),
        "gateway": GatewayLedger(base_url=settings.api_url, access_token=settings.access_token, **fast),
    }
    job = build_definitions(settings, resources=resources).resolve_job_def("daily_ledger")
    return job.execute_in_process(
        tags=partition_range_tags(first.isoformat(), last.isoformat()),
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def table_rows(settings: Settings, sql: str, params: dict | None = None) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


def tree_digest(root: Path) -> dict[str, str]:
    """Content hash of every file under root (for "exactly as before" assertions)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def warehouse_digest(settings: Settings) -> dict[str, str]:
    """Content hash of every warehouse table and view (order-independent; `requests` is a view over its
    day files), for "exactly as before" assertions."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name "
                                            "FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
        return {t: hashlib.sha256(repr(con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall()).encode()).hexdigest()
                for t in tables}


QUOTA_LAKE = ("quota_daily", "quota_pulls", "balance_snapshots", "key_snapshots")


def lake_digest(settings: Settings, datasets=QUOTA_LAKE) -> dict[str, str]:
    return {d: repr(sorted(tree_digest(settings.lake / d).items())) for d in datasets if (settings.lake / d).exists()}


def bad_input_catalogue():
    """tests/reliability/test_bad_input.py as a module: its catalogues of bad log lines and ledger rows."""
    folder = Path(__file__).resolve().parent / "reliability"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("bad_input_catalogue", folder / "test_bad_input.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def decoded_texts(path: Path) -> list[str]:
    """What a reader of this file would see, decoded: the raw bytes as text, a gzip stream decompressed,
    every value of a Parquet file (pyarrow), every row of every table and view of a DuckDB file. A
    secret inside a compressed page does not show in the raw bytes; it shows here."""
    import gzip

    import pyarrow.parquet as pq

    data = path.read_bytes()
    texts = [data.decode("utf-8", "replace")]
    if data[:2] == b"\x1f\x8b":
        try:
            texts.append(gzip.decompress(data).decode("utf-8", "replace"))
        except (OSError, EOFError):
            pass
    if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
        texts.append(repr(pq.read_table(path).to_pylist()))
    if data[8:12] == b"DUCK":
        with duckdb.connect(str(path), read_only=True) as con:
            tables = [t for (t,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary UNION ALL "
                "SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary").fetchall()]
            for table in tables:
                try:
                    texts.append(repr(con.execute(f'SELECT * FROM "{table}"').fetchall()))
                except duckdb.Error as exc:  # e.g. a view over day files of another home
                    texts.append(f"{table}: unreadable ({exc})")
    return texts


def secrets_found(roots: list[Path], needles: list[str]) -> list[str]:
    """`path: needle` for every file under `roots` whose decoded contents (`decoded_texts`) hold a needle."""
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                text = "\n".join(decoded_texts(path))
                hits += [f"{path}: {needle}" for needle in needles if needle in text]
    return hits


def stop_process_group(process: subprocess.Popen, wait_s: float, *, naming: Path | None = None) -> None:
    """End a process started with `start_new_session=True` and its group (SIGTERM, then SIGKILL after
    `wait_s`); then, with `naming`, every process whose command line names that folder (a Dagster code
    server runs in a session of its own: `end_processes_naming`)."""
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=wait_s)
    if naming is not None:
        end_processes_naming(naming)


def end_processes_naming(folder: Path, grace_s: float = 10.0) -> list[int]:
    """End every process whose command line names `folder` (a test's own temporary folder); returns
    their pids. Dagster's webserver and `dagster dev` start each code server in a session of its own,
    so ending their process group leaves the code server running (and its heartbeat timeout never
    fires under libfaketime): a test that starts one ends what names its DAGSTER_HOME or cwd."""
    import signal
    import time

    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGTERM)
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + grace_s
    for pid in found:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            time.sleep(0.1)
        try:
            if not _is_zombie(pid):
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return True


def outside_libfaketime(env: dict[str, str], now: datetime | None = None) -> dict[str, str]:
    """`env` for child processes that run Dagster (a daemon, a code server), with the product's clock
    (COMET_LEDGER_NOW: `now`, default the suite's, running on from the machine's time) and without
    libfaketime.

    Under `make test-clocks` the suite runs under libfaketime, and in a Python process under it a timed
    wait on an event or a lock never returns (with the monotonic clock left alone, `time.sleep` fails
    instead): the daemon's threads stopped after their first iteration and runs stayed queued. The
    services therefore run on the machine's clock, as PostgreSQL does (pg_server.py), and the product's
    clock is handed over: now as the suite sees it, running on from the machine's time at hand-over.
    """
    preload = [lib for lib in env.get("LD_PRELOAD", "").replace(":", " ").split() if "faketime" not in lib]
    env = {k: v for k, v in env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
    if preload:
        env["LD_PRELOAD"] = " ".join(preload)
    machine_time = subprocess.run([sys.executable, "-c", "import time; print(repr(time.time()))"], env=env,
                                  capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    return env | {"COMET_LEDGER_NOW": f"{(now or clock.now()).isoformat()}@{machine_time}"}
