"""Shared by test_concurrency, test_idempotency and test_bad_input: a small simulated world, the
environment a child process needs to run the pipeline against it, and content hashes of every
warehouse table with the time-dependent values left out (each exclusion documented below).

Not a conftest: tests/reliability/ is shared, and these helpers are imported explicitly.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from conftest import decoded_texts, make_settings, secrets_found  # noqa: F401 (used by the hostile tests)
from pipelines.definitions import build_definitions
from pipelines.defs.resources import GatewayLedger, QueryService
from pipelines.defs.schedules import partition_range_tags
from pipelines.lib.settings import Settings
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import Traffic, generate_traffic

REPO = Path(__file__).resolve().parents[2]
KEY_OWNERS = REPO / "config" / "key_owners.csv"
BUDGETS = REPO / "config" / "budgets.csv"

# A small world: six reporting days, about ten requests a day (every planted reality still falls
# inside it, several on one day), so a full pipeline run takes seconds.
SIM_START = date(2026, 10, 1)
SIM_DAYS = 6
REQUESTS_PER_DAY = 10
FIRST, LAST = SIM_START, SIM_START + timedelta(days=SIM_DAYS - 1)

# What a DuckDB lock conflict, a SQLite one or Dagster's storage set-up race prints; none may appear.
LOCK_ERRORS = re.compile(
    r"could not set lock|conflicting lock|database is locked|lock on file|IO Error|already exists|"
    r"Traceback|STEP_FAILURE|RUN_FAILURE",
    re.IGNORECASE,
)


def small_traffic() -> Traffic:
    return generate_traffic(seed=7, start=SIM_START, days=SIM_DAYS, requests_per_day=REQUESTS_PER_DAY)


@dataclass(frozen=True)
class World:
    """One data home wired to the simulator: prices from the simulator's own list, the shipped key
    owners, the access token (so the gateway ledger is pulled) and the client logs in the inbox."""

    root: Path
    home: Path
    dagster_home: Path
    prices: Path
    sim: SimulatorServer

    @property
    def settings(self) -> Settings:
        return make_settings(self.home, self.sim, COMETAPI_ACCESS_TOKEN=self.sim.access_token,
                             COMET_LEDGER_PRICES=str(self.prices), COMET_LEDGER_KEY_OWNERS=str(KEY_OWNERS),
                             COMET_LEDGER_BUDGETS=str(BUDGETS))

    def env(self) -> dict[str, str]:
        """The environment of a child process (`comet-ledger`, the Dagster CLI) running this world."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))}
        return env | {
            "COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"],  # the suite's clock (conftest.py)
            "COMET_LEDGER_HOME": str(self.home),
            "DAGSTER_HOME": str(self.dagster_home),
            "COMETAPI_QUERY_URL": self.sim.url,
            "COMETAPI_API_URL": self.sim.url,
            "COMETAPI_KEY": self.sim.api_key,
            "COMETAPI_ACCESS_TOKEN": self.sim.access_token,
            "COMET_LEDGER_PRICES": str(self.prices),
            "COMET_LEDGER_KEY_OWNERS": str(KEY_OWNERS),
            "COMET_LEDGER_BUDGETS": str(BUDGETS),
            "COMET_LEDGER_START_DATE": "2026-09-01",
            "PYTHONUNBUFFERED": "1",
        }


def make_world(root: Path, sim: SimulatorServer, traffic: Traffic, *, inbox: bool = True) -> World:
    root.mkdir(parents=True, exist_ok=True)
    prices = root / "sim-prices.csv"
    prices.write_text(prices_csv(traffic.start, traffic.days))
    world = World(root=root, home=root / "home", dagster_home=root / "dagster", prices=prices, sim=sim)
    if inbox:
        write_inbox(traffic, world.settings.inbox)
    return world


def run_selection(settings: Settings, selection: dg.AssetSelection, first: date, last: date) -> None:
    """Materialise some of the daily job's assets for [first, last] in one in-process run."""
    fast = {"base_delay_s": 0.01, "timeout_s": 5.0}
    resources = {
        "query_service": QueryService(base_url=settings.query_url, api_key=settings.api_key, **fast),
        "gateway": GatewayLedger(base_url=settings.api_url, access_token=settings.access_token, **fast),
    }
    defs = dg.Definitions.merge(build_definitions(settings, resources=resources),
                                dg.Definitions(jobs=[dg.define_asset_job("selection", selection=selection)]))
    result = defs.resolve_job_def("selection").execute_in_process(
        tags=partition_range_tags(first.isoformat(), last.isoformat()), instance=dg.DagsterInstance.ephemeral())
    assert result.success


def cli(*args: str) -> list[str]:
    """`comet-ledger ARGS` as a child process of this interpreter."""
    return [sys.executable, "-m", "pipelines.cli", *args]


# --- content hashes ---------------------------------------------------------------------------------

# Columns that record WHEN something happened, or an id minted from that moment. A re-run, or the
# same run in another data home, legitimately changes them; every other column of every table is
# compared. Each entry says why it may differ.
TIME_COLUMNS: dict[str, dict[str, str]] = {
    "quota_daily": {
        "pulled_at": "the latest pull of the day: every run pulls again",
        "pull_id": "minted from pulled_at",
    },
    "quota_restatements": {
        "previous_pulled_at": "when the earlier pull happened",
        "pulled_at": "when the restating pull happened",
        "pull_id": "minted from pulled_at",
    },
    "balance_snapshots": {
        "fetched_at": "a snapshot is the moment of its call",
        "snapshot_id": "minted from fetched_at",
    },
    "key_snapshots": {
        "fetched_at": "a snapshot is the moment of its call",
        "snapshot_id": "minted from fetched_at",
    },
    "anomalies": {"detected_at": "the build that (re)detected the finding"},
    "service_day_boundary": {"inferred_at": "the build that compared the ledger with daily_quota"},
    "inbox_files": {"staged_at": "when the file version was read (once per data home)"},
    "model_versions": {"built_at": "when this SQL version first built its table (once per data home)"},
    "rebuild_inputs": {
        "inputs_sha256": "hashes the home's own lake file paths and modification times",
        "built_at": "when the table was last rebuilt from changed inputs",
    },
}
# In one data home an unchanged inbox file is read once, a model version recorded once and a table
# whose inputs did not change is not rebuilt, so the idempotency test keeps these columns in: a re-run
# that re-reads files, re-records models or rebuilds for nothing fails.
STABLE_IN_ONE_HOME = {("inbox_files", "staged_at"), ("model_versions", "built_at"),
                      ("rebuild_inputs", "inputs_sha256"), ("rebuild_inputs", "built_at")}

# Point-in-time tables: every run appends one observation (a re-run legitimately adds a row). They
# are compared as the SET of their distinct rows (time columns aside), and their row counts apart.
SNAPSHOT_TABLES = ("balance_snapshots", "key_snapshots")

# The balance-ledger findings (runway, top_up, balance_jump) describe the latest snapshot: their
# detail and evidence name its id and time, and their finding_id hashes that evidence. Those ids and
# date-times are masked, and their finding_id left out; everything else of them is compared.
BALANCE_KINDS = ("runway", "top_up", "balance_jump")
_MINTED_ID = re.compile(r"\d{8}T\d{6}\d*Z-[0-9a-f]{6}")
_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?( UTC|Z|[+-]\d{2}:\d{2})?")


# DOUBLE columns (estimates, variances, percentages) are sums of doubles: summed in another order, the
# last binary digit moves (~1e-17 USD). The monthly marts sum rows of several days in the order those
# days were inserted, so two homes that built the same days in a different order (parallel partition
# runs) differ there. Across homes, doubles are compared to 12 significant digits; within one home,
# where a re-run inserts in the same order, exactly. Money columns are DECIMAL and always exact.
FLOAT_DIGITS = 12


def _comparable(value):
    if isinstance(value, list):  # e.g. budget thresholds: hashable, like every other value
        return tuple(_comparable(v) for v in value)
    return float(f"{value:.{FLOAT_DIGITS}g}") if isinstance(value, float) else value


def excluded_columns(table: str, *, one_home: bool) -> set[str]:
    columns = set(TIME_COLUMNS.get(table, {}))
    if one_home:
        columns -= {c for t, c in STABLE_IN_ONE_HOME if t == table}
    return columns


def table_rows(con: duckdb.DuckDBPyConnection, table: str, *, one_home: bool = False) -> list[tuple]:
    """The table's rows without its excluded columns, sorted (snapshot tables: distinct rows)."""
    columns = [c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = $t ORDER BY column_index",
        {"t": table}).fetchall()]
    kept = [c for c in columns if c not in excluded_columns(table, one_home=one_home)]
    quoted = ", ".join('"' + c + '"' for c in kept)
    rows = con.execute(f'SELECT {quoted} FROM "{table}"').fetchall()
    if table == "anomalies":
        rows = [_mask_balance_finding(dict(zip(kept, row)), kept) for row in rows]
    if not one_home:
        rows = [tuple(_comparable(v) for v in row) for row in rows]
    if table in SNAPSHOT_TABLES:
        rows = list(set(rows))
    return sorted(rows, key=repr)


def _mask_balance_finding(row: dict, kept: list[str]) -> tuple:
    if row.get("kind") in BALANCE_KINDS:
        row["finding_id"] = None
        for column in ("detail", "evidence"):
            row[column] = _MOMENT.sub("<time>", _MINTED_ID.sub("<id>", row[column]))
    return tuple(row[c] for c in kept)


def public_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table and view (`requests` is a view over its day files, listed in `warehouse_files`)."""
    return [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary ORDER BY 1").fetchall()]


def contents(warehouse: Path, *, one_home: bool = False) -> dict[str, list[tuple]]:
    """Every table of the warehouse: its comparable rows (see TIME_COLUMNS, SNAPSHOT_TABLES,
    FLOAT_DIGITS). `one_home`: compared with the same home's earlier state (see STABLE_IN_ONE_HOME)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: table_rows(con, t, one_home=one_home) for t in public_tables(con)}


def digests(warehouse: Path, *, one_home: bool = False) -> dict[str, str]:
    """SHA-256 of every table's comparable rows."""
    return {t: hashlib.sha256(repr(rows).encode()).hexdigest()
            for t, rows in contents(warehouse, one_home=one_home).items()}


def row_counts(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in public_tables(con)}


def query(warehouse: Path, sql: str, params: dict | None = None) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


def differing(a: dict, b: dict) -> dict[str, dict[str, list]]:
    """The tables whose contents differ (or exist in only one), each with a few rows found only on
    either side: empty when the two warehouses hold the same content."""
    out = {}
    for t in sorted(a.keys() | b.keys()):
        if a.get(t) != b.get(t):
            left, right = set(a.get(t, [])), set(b.get(t, []))
            out[t] = {"only_left": sorted(left - right, key=repr)[:3], "only_right": sorted(right - left, key=repr)[:3],
                      "rows": [len(a.get(t, [])), len(b.get(t, []))]}
    return out


def invariants(warehouse: Path, truth: dict, first: date, last: date) -> dict[str, object]:
    """The "no lost, no duplicated rows" figures over [first, last]:

    - quota_daily equals the simulator's daily_quota for those days (every key-day, exact USD and count);
    - requests holds each request_id once; recon_key_daily one row per key-day;
    - recon_key_daily covers exactly the key-days the simulator reported.
    """
    window = {"first": first, "last": last}
    quota = {(d, k): (usd, n) for d, k, usd, n in query(
        warehouse, "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily "
                   "WHERE usage_date BETWEEN $first AND $last", window)}
    expected = {key_day: value for key_day, value in truth.items() if first <= key_day[0] <= last}
    [(requests, request_ids)] = query(
        warehouse,
        "SELECT count(*), count(DISTINCT request_id) FROM requests WHERE usage_date BETWEEN $first AND $last", window)
    [(recon_rows, recon_key_days)] = query(
        warehouse, "SELECT count(*), count(DISTINCT (usage_date, key_name)) FROM recon_key_daily "
                   "WHERE usage_date BETWEEN $first AND $last", window)
    recon_keys = {(d, k) for d, k in query(
        warehouse, "SELECT usage_date, key_name FROM recon_key_daily WHERE usage_date BETWEEN $first AND $last",
        window)}
    return {
        "quota_daily_equals_simulator": quota == expected,
        "requests": requests,
        "duplicated_request_ids": requests - request_ids,
        "duplicated_recon_key_days": recon_rows - recon_key_days,
        "recon_covers_reported_key_days": set(expected) <= recon_keys,
    }


# --- hostile answers and files (test_hostile_answers.py, test_hostile_files.py) ----------------------

def run_cli(monkeypatch, world: "World", *args: str, **env: str) -> tuple[int, list[str]]:
    """`comet-ledger ARGS` in this process with the world's environment; (exit status, stderr lines).
    The process umask is put back afterwards (the command sets its own)."""
    import contextlib
    import io

    from pipelines.cli import main

    wanted = world.env() | env
    for name in [n for n in os.environ if n.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)
    err = io.StringIO()
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(list(args))
    finally:
        os.umask(umask)
    return status, [line for line in err.getvalue().splitlines() if line.strip()]


def file_digests(root: Path, skip=lambda p: False) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".lock") and not skip(p)}


class AnswerServer:
    """A loopback HTTP server that answers every request with `body` (JSON): at once, one byte every
    `drip_s` seconds, or declaring `declared_length` and streaming zeros. Records how many requests it
    got and how many body bytes each sent before the client went away."""

    def __init__(self, body: bytes = b"{}", *, drip_s: float | None = None, declared_length: int | None = None,
                 chunked_bytes: int | None = None) -> None:
        import socketserver
        import threading

        self.body, self.drip_s = body, drip_s
        self.declared_length, self.chunked_bytes = declared_length, chunked_bytes
        self.requests = 0
        self.sent: list[int] = []
        self.received = threading.Event()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                server.requests += 1
                server.received.set()
                server.sent.append(0)
                try:
                    server._answer(self.wfile)
                except OSError:
                    pass

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, out) -> None:
        import time

        if self.chunked_bytes is not None:
            out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"[" + b"0," * (2**16 // 2 - 1) + b"0"
            while self.sent[-1] < self.chunked_bytes:
                out.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.sent[-1] += len(piece)
            out.write(b"0\r\n\r\n")
            return
        length = self.declared_length if self.declared_length is not None else len(self.body)
        out.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % length)
        if self.declared_length is not None:
            piece = b" " * 2**16
            while self.sent[-1] < length:
                out.write(piece)
                self.sent[-1] += len(piece)
            return
        if self.drip_s is None:
            out.write(self.body)
            self.sent[-1] = len(self.body)
            return
        for i in range(len(self.body)):
            out.write(self.body[i:i + 1])
            out.flush()
            self.sent[-1] += 1
            time.sleep(self.drip_s)

    def __enter__(self) -> "AnswerServer":
        import threading

        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
