"""Kill -9 harness for the crash tests (`test_crashes.py`); test code only, never imported by `pipelines`.

`crash_harness.py --serve` is a fork server the crash test starts once: it wraps a few functions the
pipeline calls while it writes (`POINTS`), imports Dagster and the pipeline, then for each request
forks a child that runs the whole `daily_ledger` job for reporting days [first, last] in-process
(`pipelines.runs.run_range`, as `comet-ledger run` does) against the simulator whose URL the parent
test passed in the child's environment. (`crash_harness.py FIRST LAST` does one run without forking.)

Production code reads none of these variables; only this harness does:

- `COMET_LEDGER_CRASH_AT="<point>:<k>"`: at the k-th time `<point>` is reached, write one line
  `crash-harness: killed at <point>:<k> after <n> warehouse swap(s)` to stderr and SIGKILL the
  process running the pipeline (no cleanup handler, no `finally`, no atexit runs);
- `COMET_LEDGER_CRASH_COUNTS=<file>`: on a normal exit, write how often each point was reached, as
  JSON (the parent picks k from these counts);
- `COMET_LEDGER_CRASH_PUBLISHED=<folder>`: after each warehouse swap, copy the published file to
  `<folder>/<n>.duckdb`: every state an uninterrupted run publishes, in order;
- `COMET_LEDGER_CRASH_INSTANCE=ephemeral`: run with an in-memory Dagster instance instead of the
  one at `DAGSTER_HOME`.

A wrapper only counts calls that write the lake (`<home>/lake`) or the warehouse
(`<home>/warehouse.duckdb` and its day files under `<home>/warehouse_files`); Dagster's own files are
left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

CRASH_ENV = "COMET_LEDGER_CRASH_AT"
COUNTS_ENV = "COMET_LEDGER_CRASH_COUNTS"
PUBLISHED_ENV = "COMET_LEDGER_CRASH_PUBLISHED"
INSTANCE_ENV = "COMET_LEDGER_CRASH_INSTANCE"

# point -> where the process dies
POINTS = {
    "lake.mid_write": "pq.write_table of a lake file: half the temporary file's bytes written, no footer, not renamed",
    "lake.mid_stream": "ParquetWriter.write_table of a streamed lake file (inbox staging): a row group written, "
                       "file not closed (no footer), not renamed",
    "lake.before_replace": "the lake's temporary file complete and fsynced, os.replace not called yet",
    "lake.after_replace": "right after a lake os.replace (before the directory fsync and before the next "
                          "file of the same pull / the pull record)",
    "warehouse.mid_copy": "shutil.copyfile of the published warehouse to .build: half the bytes copied",
    "warehouse.mid_model": "after the k-th SQL statement a model runs against the private .build copy "
                           "(the model's remaining statements and models not run)",
    "warehouse.after_checkpoint": "CHECKPOINT executed on the .build copy, connection still open, not swapped",
    "warehouse.before_swap": "the .build copy checkpointed, closed and fsynced; os.replace over the published "
                             "file not called yet",
    "warehouse.after_swap": "right after os.replace of .build over the published warehouse (before the "
                            "directory fsync and before the run's next step)",
    "warehouse.after_day_file": "right after os.replace of one day file of `requests` into "
                                "<home>/warehouse_files (before its directory fsync, the next day's file, the "
                                "view over them and the swap that lists them)",
}


class Harness:
    """The hooks of one process. `configure` says which home to watch and where to die."""

    def __init__(self) -> None:
        self.lake: Path | None = None
        self.warehouse: Path | None = None
        self.day_files: Path | None = None
        self.target: tuple[str, int] | None = None
        self.counts: Counter[str] = Counter()
        self.swaps = 0

    def configure(self, home: Path, target: tuple[str, int] | None) -> None:
        self.lake = (home / "lake").resolve()
        self.warehouse = (home / "warehouse.duckdb").resolve()
        self.day_files = (home / "warehouse_files").resolve()
        self.target = target
        self.counts = Counter()
        self.swaps = 0

    # -- bookkeeping ----------------------------------------------------------------------------
    def reached(self, point: str) -> bool:
        """Count one arrival at `point`; True when this is the arrival to die at."""
        self.counts[point] += 1
        return self.target == (point, self.counts[point])

    def die(self, point: str) -> None:
        sys.stderr.write(f"crash-harness: killed at {point}:{self.counts[point]} after {self.swaps} warehouse swap(s)\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def in_lake(self, path) -> bool:
        if self.lake is None:
            return False
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(self.lake)
        except TypeError:  # a file object, not a path
            return False

    def in_day_files(self, path) -> bool:
        if self.day_files is None:
            return False
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(self.day_files)
        except TypeError:
            return False

    def is_warehouse(self, path) -> bool:
        if self.warehouse is None:
            return False
        try:
            return Path(os.fspath(path)).resolve() == self.warehouse
        except TypeError:
            return False

    # -- hooks ----------------------------------------------------------------------------------
    def install(self) -> None:
        import duckdb
        import pyarrow.parquet as pq

        import pipelines.lib.warehouse as warehouse

        harness = self

        real_write_table = pq.write_table

        def write_table(table, where, *args, **kwargs):
            if not harness.in_lake(where) or not harness.reached("lake.mid_write"):
                return real_write_table(table, where, *args, **kwargs)
            real_write_table(table, where, *args, **kwargs)
            size = os.path.getsize(where)
            os.truncate(where, size // 2)  # what a process killed halfway through its writes leaves
            harness.die("lake.mid_write")

        pq.write_table = write_table

        real_writer_write_table = pq.ParquetWriter.write_table  # write_batch goes through it too

        def writer_write_table(self, table, *args, **kwargs):
            real_writer_write_table(self, table, *args, **kwargs)
            if harness.in_lake(getattr(self, "where", "")) and harness.reached("lake.mid_stream"):
                harness.die("lake.mid_stream")

        pq.ParquetWriter.write_table = writer_write_table

        real_replace = os.replace
        real_copyfile = shutil.copyfile

        def replace(src, dst, *args, **kwargs):
            if harness.in_lake(dst) and os.fspath(dst).endswith(".parquet"):
                if harness.reached("lake.before_replace"):
                    harness.die("lake.before_replace")
                real_replace(src, dst, *args, **kwargs)
                if harness.reached("lake.after_replace"):
                    harness.die("lake.after_replace")
                return None
            if harness.in_day_files(dst):
                real_replace(src, dst, *args, **kwargs)
                if harness.reached("warehouse.after_day_file"):
                    harness.die("warehouse.after_day_file")
                return None
            if harness.is_warehouse(dst):
                if harness.reached("warehouse.before_swap"):
                    harness.die("warehouse.before_swap")
                real_replace(src, dst, *args, **kwargs)
                harness.swaps += 1
                published = os.environ.get(PUBLISHED_ENV)
                if published:
                    real_copyfile(dst, Path(published) / f"{harness.swaps}.duckdb")
                if harness.reached("warehouse.after_swap"):
                    harness.die("warehouse.after_swap")
                return None
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace

        def copyfile(src, dst, *args, **kwargs):
            if not harness.is_warehouse(src) or not harness.reached("warehouse.mid_copy"):
                return real_copyfile(src, dst, *args, **kwargs)
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                data = fin.read()
                fout.write(data[: len(data) // 2])
            harness.die("warehouse.mid_copy")

        shutil.copyfile = copyfile

        class BuildConnection:
            """The connection `publish` yields, wrapped: counts model statements and the CHECKPOINT."""

            def __init__(self, con: duckdb.DuckDBPyConnection):
                self._con = con

            def __getattr__(self, name):
                return getattr(self._con, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self._con.__exit__(*exc)

            def execute(self, query, *args, **kwargs):
                result = self._con.execute(query, *args, **kwargs)
                if isinstance(query, str) and query.strip().upper() == "CHECKPOINT" \
                        and harness.reached("warehouse.after_checkpoint"):
                    harness.die("warehouse.after_checkpoint")
                return result

            def model_statement(self, statement, *args, **kwargs):
                result = self._con.execute(statement, *args, **kwargs)
                if harness.reached("warehouse.mid_model"):
                    harness.die("warehouse.mid_model")
                return result

        class ModelStatements:
            """What `run_model` sees of a build connection: `execute` is a model statement."""

            def __init__(self, build: BuildConnection):
                self._build = build

            def __getattr__(self, name):
                return getattr(self._build, name)

            def execute(self, *args, **kwargs):
                return self._build.model_statement(*args, **kwargs)

        real_open = warehouse._open

        def open_build(path):
            con = real_open(path)
            return BuildConnection(con) if Path(path).name == harness.warehouse.name + ".build" else con

        warehouse._open = open_build

        real_run_model = warehouse.run_model

        def run_model(con, name, params):
            return real_run_model(ModelStatements(con) if isinstance(con, BuildConnection) else con, name, params)

        # Modules bind `run_model` at import (`from pipelines.lib.warehouse import run_model`): this
        # runs before any of them is imported.
        warehouse.run_model = run_model

        # ParquetWriter keeps no public reference to its path: remember it.
        real_init = pq.ParquetWriter.__init__

        def writer_init(self, where, *args, **kwargs):
            self.where = where
            real_init(self, where, *args, **kwargs)

        pq.ParquetWriter.__init__ = writer_init




def parse_target(raw: str | None) -> tuple[str, int] | None:
    if not raw:
        return None
    point, _, k = raw.rpartition(":")
    if point not in POINTS or not k.isdigit() or int(k) < 1:
        raise SystemExit(f"{CRASH_ENV} must be <point>:<k> with a point of {sorted(POINTS)}, not {raw!r}")
    return point, int(k)


def run(harness: Harness, first: str, last: str) -> int:
    """One pipeline run in this process, as `comet-ledger run` would do it, under the hooks."""
    from datetime import date

    import dagster as dg

    from pipelines.lib.settings import load_settings
    from pipelines.runs import run_range

    harness.configure(Path(os.environ["COMET_LEDGER_HOME"]), parse_target(os.environ.get(CRASH_ENV)))
    settings = load_settings()
    if settings.home.resolve() != harness.lake.parent:
        raise SystemExit("COMET_LEDGER_HOME and the settings disagree")
    # `persistent`: the Dagster instance at DAGSTER_HOME (sqlite), as the CLI uses; `ephemeral`: in
    # memory (the pipeline's own files are the same; only Dagster's run records are not kept).
    instance = dg.DagsterInstance.ephemeral() if os.environ.get(INSTANCE_ENV) == "ephemeral" else None
    run_range(settings, date.fromisoformat(first), date.fromisoformat(last), instance=instance)
    counts_file = os.environ.get(COUNTS_ENV)
    if counts_file:
        Path(counts_file).write_text(json.dumps({p: harness.counts[p] for p in POINTS} | {"swaps": harness.swaps}))
    return 0


def preload(harness: Harness) -> None:
    """Hooks first (modules bind `run_model` at import), then every heavy import."""
    harness.install()
    import dagster  # noqa: F401

    import pipelines.definitions  # noqa: F401
    import pipelines.runs  # noqa: F401


def serve() -> int:
    """Fork server: import once, then one forked child per request line on stdin.

    Request: `{"args": [first, last], "env": {...}, "cwd": dir, "log": file}`. Replies on stdout:
    `{"pid": n}` once the child is forked, then `{"exit": code}` (negative: killed by that signal).
    Importing Dagster takes seconds; forking a process that has done it takes milliseconds.
    """
    import threading
    import traceback

    harness = Harness()
    preload(harness)
    if threading.active_count() != 1:  # forking a process with threads could deadlock the child
        raise SystemExit(f"fork server: {threading.active_count()} threads after the imports")
    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.environ.clear()
                os.environ.update(request["env"])
                os.chdir(request["cwd"])
                code = run(harness, *request["args"])
            except SystemExit as stop:
                print(stop, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    if len(sys.argv) != 3:
        sys.exit("usage: crash_harness.py FIRST LAST | --serve")
    _harness = Harness()
    preload(_harness)
    sys.exit(run(_harness, *sys.argv[1:]))
