"""The DuckDB warehouse: one writer at a time, published by atomic swap; `requests` in per-day files.

Analysts open `warehouse.duckdb` read-only, and DuckDB will not let a writer open a file that
another process holds. So the pipeline never writes the published file in place:

1. take an exclusive lock (`warehouse.duckdb.lock`): writers queue, one at a time;
2. copy the published file to `warehouse.duckdb.build` (or start empty);
3. run the SQL models against the copy, checkpoint, close;
4. `os.replace` the copy over the published file;
5. with the lake on object storage, copy the published file there as a version
   (`warehouse_copies`), still under the lock.

A reader that opened the old file keeps a consistent view of it until it reconnects; a crash at
any step leaves the published file as it was (a stale `.build` is discarded by the next writer).

Step 2 costs the size of the file, and a daily run publishes six times (one per warehouse asset).
With every request in the file (100k a day: 36.5M rows, 1.3 GiB after a year) each publish cost
2-3 s of copying and fsync, growing with the history (docs/benchmarks.md). So the one table that
grows with every request is kept out of the file ("day files", `replace_days`):

- each reporting day of `requests` is one Parquet file,
  `<home>/warehouse_files/requests/usage_date=D/<sha256 of its bytes>.parquet`, written atomically
  (temporary file, fsync, rename) while the copy is built, before the swap;
- `warehouse_files` (a small table in the DuckDB file) lists the current file of each day, and
  `requests` is a view over exactly those files (absolute paths, hive-partitioned by usage_date, so
  a query for some days opens only their files). Analysts still `SELECT * FROM requests`;
- so the swap publishes the new list and the new view at once: a reader sees the old day files or
  the new ones, never a mix, and a crash before the swap leaves only unlisted files behind;
- a file is named by its content, so it is never overwritten with different bytes: a session that
  opened the old view keeps reading what was published to it. A file no longer listed is deleted
  by the next build that writes day files once it has been unlisted for `RETIRED_FILES_KEPT_S` (a
  day); an analyst session older than that must reconnect to read `requests`. Files a crashed
  build left behind are unlisted from the start and go the same way;
- every writer checks that the listed files are there: when the home was moved it points the view
  at the new place; when files are gone (deleted, or only warehouse.duckdb was copied) it unlists
  their days and marks `requests` as built by unknown SQL, so the next reconciliation build
  rebuilds the whole history from the lake (`stale_models`).

Every other table is small (per key and day, per model and day, per month) and stays in the file.
`scratch` (dry runs) writes its day files into its own temporary folder and reads the published
ones it did not rewrite: a name is the content, so the same name in either folder is the same file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import filelock
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib import clock, disk
from pipelines.lib.days import window_days
from pipelines.lib.lake import fsync_dir, made_then_written, object_lake_of_home

_SQL_DIR_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "sql",  # a checkout (editable install)
    Path(__file__).resolve().parents[2] / "_sql",  # an installed wheel
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


_QUERY_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)?$")


def query_path(name: str) -> Path:
    """`sql/reports/<name>.sql` for a read-only query such as `pack/totals` or `previews/quota_daily`:
    the reports and previews that read the warehouse without building anything."""
    if not _QUERY_NAME.match(name):
        raise ValueError(f"not a query name: {name!r}")
    path = sql_dir() / "reports" / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no query sql/reports/{name}.sql")
    return path


def run_query(con: duckdb.DuckDBPyConnection, name: str,
              params: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """Execute the one statement of `sql/reports/<name>.sql`, bound to the parameters it names (a
    query may use fewer of them than the caller has); the cursor is returned for fetching."""
    statements = con.extract_statements(query_path(name).read_text())
    if len(statements) != 1:
        raise ValueError(f"sql/reports/{name}.sql holds {len(statements)} statements, not one")
    [statement] = statements
    wanted = statement.named_parameters
    given = params or {}
    missing = wanted - given.keys()
    if missing:
        raise KeyError(f"query {name} needs parameters {sorted(missing)}")
    return con.execute(statement, {k: given[k] for k in wanted} if wanted else None)


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
    """The version of a model: its SQL and that of every shared macro it calls (a changed macro
    rebuilds the tables built with it)."""
    text = model_path(name).read_bytes()
    digest = hashlib.sha256(text)
    for macro in sorted((sql_dir() / "macros").glob("*.sql")):
        if macro.stem.encode() in text:
            digest.update(macro.read_bytes())
    return digest.hexdigest()


def bind_reporting_day(con: duckdb.DuckDBPyConnection, zone: str) -> None:
    """Define `reporting_day(ts)` on this connection for `zone` (sql/staging/reporting_day.sql), and
    `is_partial_day(d)` for today in `zone`, read once here from the product's clock."""
    run_model(con, "reporting_day", {"timezone": zone, "today": clock.today(zone)})


def bound_zone(con: duckdb.DuckDBPyConnection) -> str | None:
    """The reporting zone this connection was bound to (`bind_reporting_day`), or None."""
    [(zone,)] = con.execute("SELECT getvariable('reporting_zone')").fetchall()
    return zone


def _ensure_model_versions(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS model_versions (model VARCHAR PRIMARY KEY, sql_sha256 VARCHAR NOT NULL, "
                "built_at TIMESTAMPTZ NOT NULL)")
    con.execute("ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS reporting_zone VARCHAR")
    con.execute("COMMENT ON TABLE model_versions IS 'Which version of each SQL model built its table, and in which "
                "reporting zone (internal)'")
    con.execute("COMMENT ON COLUMN model_versions.model IS 'model name (sql/<layer>/<model>.sql)'")
    con.execute("COMMENT ON COLUMN model_versions.sql_sha256 IS 'SHA-256 of the SQL text that built the table'")
    con.execute("COMMENT ON COLUMN model_versions.built_at IS 'when that version first built it'")
    con.execute("COMMENT ON COLUMN model_versions.reporting_zone IS 'COMET_LEDGER_TIMEZONE its reporting days were "
                "derived in (NULL: a table that has no reporting day of its own)'")


def recorded_zones(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> list[str]:
    """The reporting zones the existing tables of `names` were built in (empty for a new warehouse)."""
    _ensure_model_versions(con)
    return [z for (z,) in con.execute(
        "SELECT DISTINCT reporting_zone FROM model_versions WHERE model IN (SELECT unnest($names)) "
        "AND reporting_zone IS NOT NULL ORDER BY 1", {"names": list(names)}).fetchall()]


def stale_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> list[str]:
    """Models whose table was built by a different version of their SQL than the one installed, or,
    on a connection bound to a reporting zone, in another zone (or in none recorded).

    Window-incremental tables only replace the days a run covers, so rows built by older SQL (or
    whose days were derived in another zone) would otherwise sit beside new ones (and a changed
    column list would break the insert). `window_to_build` drops them with `reset_models` and widens
    the run to the whole history.
    """
    _ensure_model_versions(con)
    zone = bound_zone(con)
    recorded = {m: (sha, z) for m, sha, z in con.execute(
        "SELECT model, sql_sha256, reporting_zone FROM model_versions").fetchall()}
    return [n for n in names if relation_exists(con, n) and (
        recorded.get(n, (None, None))[0] != model_sha(n) or (zone is not None and recorded[n][1] != zone))]


class BuildWindow(NamedTuple):
    """The days a run builds, and whether its tables were dropped first to rebuild the whole history."""

    start: date
    end: date
    reset: bool


def window_to_build(con: duckdb.DuckDBPyConnection, names: tuple[str, ...], start: date, end: date,
                    history: Callable[[], tuple[date, date] | None]) -> BuildWindow:
    """The policy for window-incremental tables: [start, end] as asked, unless one of `names` is stale
    (`stale_models`: built by other SQL, or in another reporting zone). Then every table of `names` is
    dropped (`reset_models`) and the window widens to cover the whole history too: `history()`, the
    first and last day the lake holds (None: nothing landed), is asked only then.
    """
    if not stale_models(con, names):
        return BuildWindow(start, end, False)
    reset_models(con, names)
    span = history()
    if span:
        start, end = min(start, span[0]), max(end, span[1])
    return BuildWindow(start, end, True)


def reset_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    for name in names:
        model_path(name)  # only a model's own table can be dropped
        if _is_view(con, name):  # a table kept in day files: unlist every day (the files retire)
            _retire(con, _listed(con, name, date.min, date.max))
            con.execute("DELETE FROM warehouse_files WHERE relation = $r", {"r": name})
            con.execute(f'DROP VIEW "{name}"')
        else:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')


def relation_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """A persistent table or view of that name (`requests` is a view over its day files)."""
    return con.execute(
        "SELECT count(*) FROM (SELECT table_name AS n FROM duckdb_tables() WHERE NOT temporary "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT temporary AND NOT internal) WHERE n = $n",
        {"n": name}).fetchall()[0][0] > 0


def _is_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = $n AND NOT temporary",
                       {"n": name}).fetchall()[0][0] > 0


def record_models(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Record the installed SQL of `names` (and the connection's reporting zone) as what built their tables."""
    _ensure_model_versions(con)
    zone = bound_zone(con)
    for name in names:
        con.execute(
            "INSERT INTO model_versions (model, sql_sha256, built_at, reporting_zone) VALUES ($m, $s, now(), $z) "
            "ON CONFLICT (model) DO UPDATE SET sql_sha256 = excluded.sql_sha256, built_at = excluded.built_at, "
            "reporting_zone = excluded.reporting_zone WHERE model_versions.sql_sha256 <> excluded.sql_sha256 "
            "OR model_versions.reporting_zone IS DISTINCT FROM excluded.reporting_zone",
            {"m": name, "s": model_sha(name), "z": zone},
        )


def inputs_sha(models: tuple[str, ...], params: Mapping[str, Any]) -> str:
    """SHA-256 of what a full rebuild reads: the models' SQL text, the other parameters' values, and
    the name, size and modification time of every input file (parameters that are lists of paths)."""
    digest = hashlib.sha256()
    for name in models:
        digest.update(f"model {name} {model_sha(name)}\n".encode())
    for key in sorted(params):
        value = params[key]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            for file in value:
                stat = os.stat(file)
                digest.update(f"file {key} {file} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        else:
            digest.update(f"param {key} {value!r}\n".encode())
    return digest.hexdigest()


def built_from(con: duckdb.DuckDBPyConnection, relations: tuple[str, ...], sha: str) -> bool:
    """True when every one of `relations` exists and was last rebuilt from inputs with this `inputs_sha`."""
    con.execute("CREATE TABLE IF NOT EXISTS rebuild_inputs (relation VARCHAR PRIMARY KEY, inputs_sha256 VARCHAR "
                "NOT NULL, built_at TIMESTAMPTZ NOT NULL)")
    con.execute("COMMENT ON TABLE rebuild_inputs IS 'What each fully rebuilt table was last built from (internal)'")
    con.execute("COMMENT ON COLUMN rebuild_inputs.relation IS 'table name'")
    con.execute("COMMENT ON COLUMN rebuild_inputs.inputs_sha256 IS 'SHA-256 of its SQL and input files (name, size, "
                "modification time)'")
    con.execute("COMMENT ON COLUMN rebuild_inputs.built_at IS 'when it was built from them'")
    recorded = dict(con.execute("SELECT relation, inputs_sha256 FROM rebuild_inputs").fetchall())
    return all(relation_exists(con, r) and recorded.get(r) == sha for r in relations)


def record_built_from(con: duckdb.DuckDBPyConnection, relations: tuple[str, ...], sha: str) -> None:
    for relation in relations:
        con.execute("INSERT OR REPLACE INTO rebuild_inputs VALUES ($r, $s, now())", {"r": relation, "s": sha})


@contextmanager
def writer_lock(path: Path, timeout_s: float = 3600.0) -> Iterator[None]:
    """Exclusive lock next to the warehouse (`<path>.lock`, an advisory `flock` through `filelock`);
    waits for the writer before us, at most `timeout_s` seconds. The lock goes with the process: a
    writer that dies releases it."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path), thread_local=False)  # a new descriptor per writer, as flock wants
    try:
        lock.acquire(timeout=timeout_s, poll_interval=0.1)
    except filelock.Timeout:
        raise TimeoutError(f"another writer held {lock_path} for more than {timeout_s:.0f} s") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def publish(path: Path, timeout_s: float = 3600.0, *, zone: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a private copy of the warehouse, swapped in on success
    (`timeout_s`: how long to wait for the writer before us; `zone`: the reporting zone, which
    defines `reporting_day(ts)` for the models, see sql/staging/reporting_day.sql).

    Whatever fails before the swap (the copy, a model, the checkpoint, a full disk, a SIGTERM)
    removes the copy and its WAL, and a full disk is said as such (`disk.NoSpace`)."""
    with writer_lock(path, timeout_s):
        build = path.with_name(path.name + ".build")
        made = (build, build.with_name(build.name + ".wal"))
        for stale in made:
            stale.unlink(missing_ok=True)
        try:
            if path.exists():
                shutil.copyfile(path, build)
            con = _open(build)
            try:
                _attach_files(con, [files_root(path)])
                if zone is not None:
                    bind_reporting_day(con, zone)
                yield con
                con.execute("CHECKPOINT")
            finally:
                con.close()
            with open(build, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(build, path)
        except BaseException as exc:
            for leftover in made:
                leftover.unlink(missing_ok=True)
            if isinstance(exc, Exception) and disk.is_no_space(exc):
                raise disk.NoSpace(path.parent, f"building {path.name}") from exc
            raise
        fsync_dir(path.parent)
        store = object_lake_of_home(path.parent)
        if store is not None:  # the lake is on object storage: so is a copy of each publish
            from pipelines.lib.warehouse.copies import copy_published

            copy_published(store, path)


@contextmanager
def scratch(path: Path, *, zone: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection to a throwaway copy of the warehouse (for dry runs); never published.

    Day files it writes go to its own temporary folder; the published ones are only read."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="comet-ledger-scratch-") as folder:
        copy = Path(folder) / path.name
        if path.exists():
            shutil.copyfile(path, copy)
        con = _open(copy)
        try:
            _attach_files(con, [files_root(copy), files_root(path)])
            if zone is not None:
                bind_reporting_day(con, zone)
            yield con
        finally:
            con.close()


# --- day files ------------------------------------------------------------------------------------

RETIRED_FILES_KEPT_S = 24 * 3600  # how long a file stays after it was last listed (open analyst sessions)
_ROOTS_VARIABLE = "warehouse_files_roots"  # session variable: [folder written to, *folders read from]


def files_root(path: Path) -> Path:
    """Where the day files of the warehouse at `path` live: `<home>/warehouse_files`."""
    return path.with_name(f"{path.stem}_files")


def _attach_files(con: duckdb.DuckDBPyConnection, roots: list[Path]) -> None:
    """Tell this connection where day files are written and found, and point the views there."""
    con.execute(f"SET VARIABLE {_ROOTS_VARIABLE} = $roots", {"roots": [str(r) for r in roots]})
    _ensure_registry(con)
    lost = [(r, d) for r, d, f in con.execute("SELECT relation, usage_date, file FROM warehouse_files").fetchall()
            if _resolve(roots, f) is None]
    if lost:
        # Files gone (deleted, or only warehouse.duckdb was copied here): unlist those days and mark
        # the table as built by unknown SQL, so its next build rebuilds the whole history from the lake.
        con.executemany("DELETE FROM warehouse_files WHERE relation = ? AND usage_date = ?", lost)
        if relation_exists(con, "model_versions"):
            con.executemany("DELETE FROM model_versions WHERE model = ?", sorted({(r,) for r, _ in lost}))
    for (relation,) in con.execute("SELECT DISTINCT relation FROM warehouse_files ORDER BY 1").fetchall():
        if lost or not _view_reads_from(con, relation, roots[-1]):  # e.g. the home was moved
            _create_view(con, relation)


def repoint_files(path: Path) -> None:
    """Point the views of the warehouse at `path` at its own `<stem>_files` folder (a copy made
    elsewhere names the day files where they were); a day whose file is missing is unlisted."""
    con = _open(path)
    try:
        _attach_files(con, [files_root(path)])
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _view_reads_from(con: duckdb.DuckDBPyConnection, relation: str, root: Path) -> bool:
    """Whether the view `relation` names its files under `root` (its files are checked by the caller)."""
    found = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = $n AND NOT temporary",
                        {"n": relation}).fetchall()
    return bool(found) and _quoted(f"{root}/")[:-1] in found[0][0]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _roots(con: duckdb.DuckDBPyConnection) -> list[Path]:
    [(roots,)] = con.execute(f"SELECT getvariable('{_ROOTS_VARIABLE}')").fetchall()
    if not roots:
        raise RuntimeError("day files need a connection from warehouse.publish() or warehouse.scratch()")
    return [Path(r) for r in roots]


def _ensure_registry(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE TABLE IF NOT EXISTS warehouse_files (
        relation VARCHAR NOT NULL, usage_date DATE NOT NULL, file VARCHAR NOT NULL, rows BIGINT NOT NULL,
        first_key VARCHAR, last_key VARCHAR, PRIMARY KEY (relation, usage_date))""")
    con.execute("COMMENT ON TABLE warehouse_files IS 'Which Parquet file holds each reporting day of a table "
                "kept outside the DuckDB file, such as requests (internal)'")
    for column, text in {
        "relation": "the view the file belongs to (requests)",
        "usage_date": "reporting day the file holds",
        "file": "path under <COMET_LEDGER_HOME>/warehouse_files, named by the SHA-256 of its bytes",
        "rows": "rows in the file",
        "first_key": "smallest key in the file (requests: request_id), to find the days a key can be on",
        "last_key": "largest key in the file",
    }.items():
        con.execute(f"COMMENT ON COLUMN warehouse_files.{column} IS '{text}'")


def replace_days(con: duckdb.DuckDBPyConnection, relation: str, source: str, start: date, end: date, *,
                 order_by: str, key: str) -> dict[date, int]:
    """Replace the days [start, end] of `relation` with the rows of the table `source`; returns rows per day.

    One file per day that has rows (a day without rows has no file); then the view `relation` is
    recreated over the current files, with the comments of the model `<relation>_view`.
    """
    for name in (relation, source, key):
        if not _MODEL_NAME.match(name):
            raise ValueError(f"not a name: {name!r}")
    _ensure_registry(con)
    root = _roots(con)[0]
    collect_garbage(con, root)  # the writer that adds files removes the long-unlisted ones
    before = _listed(con, relation, start, end)

    def day_rows(day: date) -> pa.Table:
        return con.sql(f'SELECT * FROM "{source}" WHERE usage_date = $day ORDER BY {order_by}',
                       params={"day": day}).to_arrow_table()

    def write(day: date, table: pa.Table) -> tuple | None:
        if not table.num_rows:
            return None
        first, last = _min_max(table[key])
        name = _write_content_named(table, root / relation / f"usage_date={day.isoformat()}")
        return relation, day, f"{relation}/usage_date={day.isoformat()}/{name}", table.num_rows, first, last

    rows = [row for row in made_then_written(window_days(start, end), day_rows, write) if row is not None]
    written = {day: count for _, day, _, count, _, _ in rows}
    con.execute("DELETE FROM warehouse_files WHERE relation = $r AND usage_date BETWEEN $s AND $e",
                {"r": relation, "s": start, "e": end})
    if rows:
        con.executemany("INSERT INTO warehouse_files VALUES (?, ?, ?, ?, ?, ?)", rows)
    _retire(con, [f for f in before if f not in {r[2] for r in rows}])
    _create_view(con, relation, source)
    return written


def day_files(con: duckdb.DuckDBPyConnection, relation: str, *, key_from: str | None = None,
              key_to: str | None = None, outside: tuple[date, date] | None = None) -> list[str]:
    """The current files of `relation` (absolute paths): only those whose keys can fall in
    [key_from, key_to], and only days outside `outside`, when given."""
    rows = con.execute(
        "SELECT file FROM warehouse_files WHERE relation = $r "
        "AND ($from IS NULL OR last_key >= $from) AND ($to IS NULL OR first_key <= $to) "
        "AND ($s IS NULL OR usage_date NOT BETWEEN $s AND $e) ORDER BY usage_date",
        {"r": relation, "from": key_from, "to": key_to, "s": outside[0] if outside else None,
         "e": outside[1] if outside else None}).fetchall()
    roots = _roots(con)
    return [str(_resolve(roots, f)) for (f,) in rows]  # (every listed file exists: `_attach_files`)


def _create_view(con: duckdb.DuckDBPyConnection, relation: str, source: str | None = None) -> None:
    roots = _roots(con)
    files = [_resolve(roots, f) for f in _listed(con, relation, date.min, date.max)]
    if files:
        # DuckDB cannot bind a parameter inside CREATE VIEW: the list is written into it, quoted.
        listed = ", ".join(_quoted(str(f)) for f in files)
        query = (f"SELECT * FROM read_parquet([{listed}], hive_partitioning = true, "
                 "hive_types = {'usage_date': DATE})")
    elif source is not None:  # no rows at all: an empty view with the source's columns
        columns = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = $t "
                              "ORDER BY column_index", {"t": source}).fetchall()
        query = "SELECT " + ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, t in columns) + " WHERE false"
    else:
        return
    con.execute(f'CREATE OR REPLACE VIEW "{relation}" AS {query}')
    run_model(con, f"{relation}_view", {})  # the view's comments


def _listed(con: duckdb.DuckDBPyConnection, relation: str, start: date, end: date) -> list[str]:
    return [f for (f,) in con.execute(
        "SELECT file FROM warehouse_files WHERE relation = $r AND usage_date BETWEEN $s AND $e ORDER BY usage_date",
        {"r": relation, "s": start, "e": end}).fetchall()]


def _resolve(roots: list[Path], file: str) -> Path | None:
    """The first folder holding a listed file (a name is its content: any copy is the same file)."""
    for root in roots:
        if (root / file).is_file():
            return root / file
    return None


def _retire(con: duckdb.DuckDBPyConnection, files: list[str]) -> None:
    """Mark unlisted files as last listed now: `collect_garbage` keeps them RETIRED_FILES_KEPT_S longer."""
    root = _roots(con)[0]
    if not files:
        return
    now = clock.filesystem_now(root)
    for file in files:
        try:
            clock.stamp(root / file, now)
        except FileNotFoundError:
            pass


def collect_garbage(con: duckdb.DuckDBPyConnection, root: Path, kept_s: float = RETIRED_FILES_KEPT_S) -> list[Path]:
    """Delete the files under `root` that the warehouse open on `con` does not list and that were not
    listed (or written) for `kept_s` seconds. Run by `replace_days`, under the writer lock: a file
    this build unlists or writes has just been touched, so only what no writer listed for a day goes."""
    if not root.is_dir():
        return []
    listed = {root / f for (f,) in con.execute("SELECT file FROM warehouse_files").fetchall()}
    cutoff = clock.filesystem_now(root) - kept_s
    removed = []
    for path in root.rglob("*"):
        if path.is_file() and path not in listed and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _write_content_named(table: pa.Table, folder: Path) -> str:
    """Write `table` as `<folder>/<sha256 of the bytes>.parquet` atomically; returns the file name.
    The same rows always give the same bytes (and name): an existing file of that name is that file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue()
    name = hashlib.sha256(data).hexdigest()[:32] + ".parquet"
    final = folder / name
    if final.is_file():
        clock.stamp(final, clock.filesystem_now(folder))  # written now, as far as garbage collection is concerned
        return name
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    with disk.writing(final):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(folder)
    return name


def _min_max(column: pa.ChunkedArray) -> tuple[str | None, str | None]:
    import pyarrow.compute as pc

    found = pc.min_max(column)
    return found["min"].as_py(), found["max"].as_py()


def define_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the shared SQL macros (`sql/macros/*.sql`, temporary: each connection that runs a model
    using one defines them; a read-only connection can too)."""
    for path in sorted((sql_dir() / "macros").glob("*.sql")):
        con.execute(path.read_text())


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-write connection whose session time zone is UTC (timestamps are stored as UTC), with the
    shared macros defined."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    define_macros(con)
    return con


def connect_readonly(path: Path) -> duckdb.DuckDBPyConnection:
    """What an analyst does; used by the CLI to print results."""
    return duckdb.connect(str(path), read_only=True)
