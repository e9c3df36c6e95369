"""The DuckDB warehouse: one writer at a time, published by atomic swap.

Analysts open `warehouse.duckdb` read-only, and DuckDB will not let a writer open a file that
another process holds. So the pipeline never writes the published file in place:

1. take an exclusive lock (`warehouse.duckdb.lock`): writers queue, one at a time;
2. copy the published file to `warehouse.duckdb.build` (or start empty);
3. run the SQL models against the copy, checkpoint, close;
4. `os.replace` the copy over the published file.

A reader that opened the old file keeps a consistent view of it until it reconnects; a crash at
any step leaves the published file as it was (a stale `.build` is discarded by the next writer).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from pipelines.lib.lake import fsync_dir

_SQL_DIR_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "sql",  # a checkout (editable install)
    Path(__file__).resolve().parents[1] / "_sql",  # an installed wheel
)
_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def sql_dir() -> Path:
    for candidate in _SQL_DIR_CANDIDATES:
        if (candidate / "core").is_dir():
            return candidate
    raise FileNotFoundError("the sql/ model folder is missing from this installation")


def model_path(name: str) -> Path:
    """`sql/<layer>/<name>.sql` for a model name such as `stg_quota_daily` or `quota_daily`."""
    if not _MODEL_NAME.match(name):
        raise ValueError(f"not a model name: {name!r}")
    matches = sorted(sql_dir().glob(f"*/{name}.sql"))
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one sql/*/{name}.sql, found {len(matches)}")
    return matches[0]


@dataclass(frozen=True)
class ModelRun:
    name: str
    statements: int
    seconds: float


def run_model(con: duckdb.DuckDBPyConnection, name: str, params: Mapping[str, Any]) -> ModelRun:
    """Execute every statement of one model file, each with the parameters it names."""
    started = time.perf_counter()
    statements = con.extract_statements(model_path(name).read_text())
    for statement in statements:
        wanted = statement.named_parameters
        missing = wanted - params.keys()
        if missing:
            raise KeyError(f"model {name} needs parameters {sorted(missing)}")
        con.execute(statement, {k: params[k] for k in wanted} if wanted else None)
    return ModelRun(name, len(statements), time.perf_counter() - started)


def model_sha(name: str) -> str:
    return hashlib.sha256(model_path(name).read_bytes()).hexdigest()


def stale_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> list[str]:
    """Models whose table was built by a different version of their SQL than the one installed.

    Window-incremental tables only replace the days a run covers, so rows built by older SQL would
    otherwise sit beside new ones (and a changed column list would break the insert). The caller
    drops them with `reset_models` and rebuilds the whole history.
    """
    con.execute("CREATE TABLE IF NOT EXISTS model_versions (model VARCHAR PRIMARY KEY, sql_sha256 VARCHAR NOT NULL, "
                "built_at TIMESTAMPTZ NOT NULL)")
    con.execute("COMMENT ON TABLE model_versions IS 'Which version of each SQL model built its table (internal)'")
    con.execute("COMMENT ON COLUMN model_versions.model IS 'model name (sql/<layer>/<model>.sql)'")
    con.execute("COMMENT ON COLUMN model_versions.sql_sha256 IS 'SHA-256 of the SQL text that built the table'")
    con.execute("COMMENT ON COLUMN model_versions.built_at IS 'when that version first built it'")
    recorded = dict(con.execute("SELECT model, sql_sha256 FROM model_versions").fetchall())
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
    return [n for n in names if n in tables and recorded.get(n) != model_sha(n)]


def reset_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    for name in names:
        model_path(name)  # only a model's own table can be dropped
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


def record_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    for name in names:
        con.execute(
            "INSERT INTO model_versions VALUES ($m, $s, now()) ON CONFLICT (model) DO UPDATE SET "
            "sql_sha256 = excluded.sql_sha256, built_at = excluded.built_at "
            "WHERE model_versions.sql_sha256 <> excluded.sql_sha256",
            {"m": name, "s": model_sha(name)},
        )


@contextmanager
def writer_lock(path: Path, timeout_s: float = 3600.0) -> Iterator[None]:
    """Exclusive lock next to the warehouse; waits for the writer before us."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another writer held {lock_path} for more than {timeout_s:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def publish(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a private copy of the warehouse, swapped in on success."""
    with writer_lock(path):
        build = path.with_name(path.name + ".build")
        for stale in (build, build.with_name(build.name + ".wal")):
            stale.unlink(missing_ok=True)
        if path.exists():
            shutil.copyfile(path, build)
        con = _open(build)
        try:
            yield con
            con.execute("CHECKPOINT")
        except BaseException:
            con.close()
            build.unlink(missing_ok=True)
            raise
        con.close()
        with open(build, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(build, path)
        fsync_dir(path.parent)


@contextmanager
def scratch(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a throwaway copy of the warehouse (for dry runs); never published."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="comet-ledger-scratch-") as folder:
        copy = Path(folder) / path.name
        if path.exists():
            shutil.copyfile(path, copy)
        con = _open(copy)
        try:
            yield con
        finally:
            con.close()


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-write connection whose session time zone is UTC (timestamps are stored as UTC)."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    return con


def connect_readonly(path: Path) -> duckdb.DuckDBPyConnection:
    """What an analyst does; used by the CLI to print results."""
    return duckdb.connect(str(path), read_only=True)
