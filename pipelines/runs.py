"""Run the Dagster jobs in-process for the command line: one range, or a resumable backfill.

Runs are recorded in the Dagster instance at `DAGSTER_HOME` (default `$COMET_LEDGER_HOME/dagster`),
so the UI started by `make dev` shows what the command line did. Where that directory has no
`dagster.yaml`, the one shipped as `pipelines/dagster.yaml` is written there (`ensure_dagster_home`).

A backfill keeps no progress of its own: the instance is its record. Each run it launches carries
its chunk's partition-range tags and `comet-ledger/backfill=<start>..<end>`; started again with the
same range, it skips every chunk that has a successful run of the job for exactly those days since
that backfill's first run, whatever launched it, and runs the rest. When it finishes (or `--restart`
abandons it) its latest run is tagged `comet-ledger/backfill-ended`, and the next backfill of that
range starts afresh. Earlier versions kept the progress in `$COMET_LEDGER_HOME/state/
backfill-<start>-<end>.json`; the next `comet-ledger backfill` of that range removes the file and
says so.
"""

from __future__ import annotations

import logging
import os
import re
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path

import dagster as dg

from pipelines.defs.pools import WRITER_POOL, WRITER_POOL_LIMIT
from pipelines.defs.schedules import partition_range_tags
from pipelines.lib import clock, disk
from pipelines.lib.days import chunks as day_chunks
from pipelines.lib.redact import redact
from pipelines.lib.settings import Settings
from pipelines.lib.warehouse import writer_lock

JOB_NAME = "daily_ledger"
# The run's events go to the Dagster instance (the UI); the terminal gets one line per failure.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# DAGSTER_HOME/dagster.yaml as this module writes it: pipelines/dagster.yaml, which says why, with
# the writer pool's name and limit filled in from pipelines/defs/pools.py.
INSTANCE_TEMPLATE = "dagster.yaml"
# By default Dagster logs a run's planned materialisations one event per asset and partition: a
# 30-day run of this job writes ~630 of them to the SQLite event log before its first step, each in
# its own connection and transaction, ~5 s a run. Dagster's own opt-in variable makes it one event
# per asset, naming the run's partition range. What that gives up: the UI does not mark the
# partitions of a run that failed as failed (they show as missing); the command line reports the
# failure itself. The variable is set for the command line's runs only, unless you set it.
PLANNED_EVENTS_VARIABLE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# What earlier versions wrote; such a file is brought up to date, any other one is left alone.
EARLIER_INSTANCE_CONFIGS = (
    "telemetry:\n  enabled: false\n",
    "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    granularity: run\n"
    "    default_limit: 1  # duckdb_writer, the only pool\n",
)


def instance_config() -> str:
    """The text of the dagster.yaml this module writes into an empty DAGSTER_HOME."""
    template = resources.files("pipelines").joinpath(INSTANCE_TEMPLATE).read_text(encoding="utf-8")
    return string.Template(template).substitute(writer_pool=WRITER_POOL, writer_pool_limit=WRITER_POOL_LIMIT)


class RunFailed(RuntimeError):
    """A Dagster run failed; the message is the first failing step's one-line reason."""


class InstanceUnavailable(RuntimeError):
    """The Dagster instance could not be opened; the message is one line naming the file and the reason."""


def instance_for(settings: Settings) -> dg.DagsterInstance:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.home / "dagster")
        os.environ["DAGSTER_HOME"] = home
    # Dagster's SQLite storages create their tables on first use with no guard against another
    # process doing the same at that moment: two `comet-ledger run` started at once on a new
    # DAGSTER_HOME failed with "table snapshots already exists" (or alembic_version, or runs).
    # Opening the instance under an exclusive lock serialises that one-time setup across processes;
    # the runs themselves still proceed in parallel.
    with writer_lock(Path(home) / "instance", timeout_s=300.0):
        ensure_dagster_home(Path(home))
        return open_instance(Path(home) / "dagster.yaml")


# dagster-postgres logs each failed connection attempt (5 retries over ~12 s) as a multi-line warning on
# the root logger; the command line reports the last one as its one line instead.
RETRY_WARNING = "Retrying failed database connection"
_UNSET_VARIABLE = re.compile(r'environment variable "(\w+)" which is not set')
_CONFIG_REASON = re.compile(r"PostProcessingError: (.+)")


def open_instance(config: Path) -> dg.DagsterInstance:
    """The instance DAGSTER_HOME/dagster.yaml describes. A database it cannot reach or log in to, a
    variable it reads that is not set or not valid, and a PostgreSQL storage without dagster-postgres
    installed raise InstanceUnavailable, whose message is one line without the password."""
    root = logging.getLogger()
    quiet = _DropMessages(RETRY_WARNING)
    root.addFilter(quiet)
    try:
        return dg.DagsterInstance.get()
    except Exception as exc:
        reason = _instance_error(exc, config)
        if reason is None:
            raise
        raise InstanceUnavailable(reason) from None
    finally:
        root.removeFilter(quiet)


def _instance_error(exc: Exception, config: Path) -> str | None:
    import sqlalchemy.exc

    missing = _first_in_chain(exc, ModuleNotFoundError)
    if missing is not None and missing.name == "dagster_postgres":
        return (f"{config} keeps Dagster's records in PostgreSQL and dagster-postgres is not installed: "
                "pip install -e '.[postgres]'")
    if isinstance(exc, dg.DagsterInvalidConfigError):
        messages = [e.message for e in exc.errors] or [str(exc)]
        unset = [m.group(1) for m in map(_UNSET_VARIABLE.search, messages) if m]
        if unset:
            return f"{config} reads {', '.join(unset)} from the environment, and it is not set"
        found = _CONFIG_REASON.search(messages[0])
        return f"{config} is not a valid Dagster instance configuration: " + (
            found.group(1) if found else messages[0].strip().splitlines()[0])
    database = _first_in_chain(exc, sqlalchemy.exc.DBAPIError)
    if database is not None:
        text = str(database.orig).strip()
        return f"cannot open Dagster's database as {config} configures it: " + (
            text.splitlines()[0] if text else type(database.orig).__name__)
    return None


def _first_in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def ensure_dagster_home(home: Path) -> None:
    """Create DAGSTER_HOME with the dagster.yaml of `instance_config` (no telemetry; the writer pool's
    limit) unless one exists; one an earlier version wrote is replaced. A dagster.yaml of your own is
    left as it is: its pools are yours to set."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    current = config.read_text() if config.exists() else ""
    if not current.strip() or current in EARLIER_INSTANCE_CONFIGS:
        tmp = config.with_name(f".{config.name}.{os.getpid()}.tmp")
        tmp.write_text(instance_config())
        os.replace(tmp, config)


def writer_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """The limit the instance applies to the warehouse writer pool (None: unlimited)."""
    return instance.event_log_storage.get_concurrency_info(WRITER_POOL).limit


def run_range(settings: Settings, first: date, last: date, instance: dg.DagsterInstance | None = None,
              job_name: str = JOB_NAME, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    """Materialise the job's assets (default: everything) for the reporting days [first, last] in one
    run, tagged with its range (and `tags`)."""
    from pipelines.definitions import build_definitions

    if last < first:
        raise ValueError(f"end {last} is before start {first}")
    if first < settings.start_date:
        raise ValueError(f"{first} is before COMET_LEDGER_START_DATE ({settings.start_date})")
    clock.refuse_future(last, settings.timezone)
    job = build_definitions(settings, interactive=True).resolve_job_def(job_name)
    with planned_events_per_asset():
        result = job.execute_in_process(
            run_config=QUIET,
            instance=instance or instance_for(settings),
            tags={**partition_range_tags(first.isoformat(), last.isoformat()), **(tags or {})},
            raise_on_error=False,
        )
    if not result.success:
        raise RunFailed(first_failure(result, settings.secrets()))
    return result


@contextmanager
def planned_events_per_asset() -> Iterator[None]:
    """One planned-materialisation event per asset in the runs started inside (see PLANNED_EVENTS_VARIABLE)."""
    if PLANNED_EVENTS_VARIABLE in os.environ:
        yield
        return
    os.environ[PLANNED_EVENTS_VARIABLE] = "true"
    try:
        yield
    finally:
        os.environ.pop(PLANNED_EVENTS_VARIABLE, None)


def first_failure(result: dg.ExecuteInProcessResult, secrets: list[str]) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            error = event.step_failure_data.error
            # The user's exception, not Dagster's wrapper around it.
            while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
                error = error.cause
            message = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name
            # Dagster prefixes the exception's class ("pkg.module.SomeError: ..."): the reason is what follows.
            head, sep, rest = message.partition(": ")
            if sep and head.split(".")[-1] == error.cls_name:
                message = rest
            message = disk.explain(error.message) or message  # a full disk, said in plain words
            return redact(f"{event.step_key}: {message}", secrets)
    return "the run failed before any step ran (see the Dagster UI for the run's events)"


@dataclass(frozen=True)
class Chunk:
    first: date
    last: date

    @property
    def label(self) -> str:
        return f"{self.first}..{self.last}"


def chunks(first: date, last: date, days: int) -> list[Chunk]:
    return [Chunk(a, b) for a, b in day_chunks(first, last, days)]


def backfill_plan(settings: Settings, first: date, last: date) -> list[Chunk]:
    """The runs a backfill of [first, last] makes: one per chunk of COMET_LEDGER_CHUNK_DAYS - 1 days
    (a query call asks one day past the days it keeps, so each run is one query-service call)."""
    return chunks(first, last, max(1, settings.chunk_days - 1))


# The tags that let a backfill resume from the Dagster instance: every run a backfill launches
# names the backfill's whole range; the run that ends a backfill (it finished, or `--restart`
# abandoned it) is tagged once more afterwards.
BACKFILL_TAG = "comet-ledger/backfill"
BACKFILL_ENDED_TAG = "comet-ledger/backfill-ended"


def backfill(
    settings: Settings,
    first: date,
    last: date,
    *,
    restart: bool = False,
    on_progress: Callable[[Chunk, int, int], None] | None = None,
    run_ids: list[str] | None = None,
) -> tuple[int, int]:
    """Materialise [first, last] one run per chunk (one query-service call each).

    An interrupted backfill started again with the same range resumes: a chunk is done when the
    instance holds a successful run of the job for exactly its days since the backfill began
    (`done_chunks`). A finished backfill ends there, so running it again re-pulls everything;
    `restart` ends an unfinished one and starts over. Returns (chunks run, chunks skipped); the
    Dagster run id of each chunk run now is appended to `run_ids` when given.
    """
    clock.refuse_future(last, settings.timezone)
    plan = backfill_plan(settings, first, last)
    instance = instance_for(settings)
    name = f"{first}..{last}"
    if restart:
        end_backfill(instance, name)
    done = done_chunks(instance, name, plan)
    ran = 0
    for index, chunk in enumerate(plan, start=1):
        if chunk.label not in done:
            result = run_range(settings, chunk.first, chunk.last, instance, tags={BACKFILL_TAG: name})
            if run_ids is not None:
                run_ids.append(result.run_id)
            ran += 1
        if on_progress:
            on_progress(chunk, index, len(plan))
    end_backfill(instance, name)
    return ran, len(plan) - ran


def done_chunks(instance: dg.DagsterInstance, name: str, plan: list[Chunk],
                job_name: str = JOB_NAME) -> set[str]:
    """The labels of the chunks of the unfinished backfill `name` that are done: those with a
    successful run of the job for exactly the chunk's days, recorded since that backfill's first
    run. Whatever launched that run counts (this backfill, `comet-ledger run`, the UI): it is the
    same work. No unfinished backfill of that range: nothing is done."""
    ended = instance.get_run_records(dg.RunsFilter(job_name=job_name, tags={BACKFILL_ENDED_TAG: name}), limit=1)
    began = instance.get_run_records(dg.RunsFilter(job_name=job_name, tags={BACKFILL_TAG: name}), limit=1,
                                     ascending=True, cursor=ended[0].dagster_run.run_id if ended else None)
    if not began:
        return set()
    since = began[0].storage_id
    done = set()
    for chunk in plan:
        latest = instance.get_run_records(dg.RunsFilter(
            job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS],
            tags=partition_range_tags(chunk.first.isoformat(), chunk.last.isoformat())), limit=1)
        if latest and latest[0].storage_id >= since:
            done.add(chunk.label)
    return done


def end_backfill(instance: dg.DagsterInstance, name: str, job_name: str = JOB_NAME) -> None:
    """Tag the latest run of backfill `name` as its end: what follows is a new backfill."""
    latest = instance.get_runs(dg.RunsFilter(job_name=job_name, tags={BACKFILL_TAG: name}), limit=1)
    if latest and latest[0].tags.get(BACKFILL_ENDED_TAG) != name:
        instance.add_run_tags(latest[0].run_id, {BACKFILL_ENDED_TAG: name})


def remove_legacy_backfill_state(settings: Settings, first: date, last: date) -> Path | None:
    """Remove the progress file earlier versions kept for a backfill of [first, last]; returns its
    path when there was one (its chunks run again: progress is read from the instance now)."""
    path = settings.home / "state" / f"backfill-{first}-{last}.json"
    if not path.exists():
        return None
    path.unlink(missing_ok=True)
    return path


# --- what the command line makes outside a run ---------------------------------------------------
# `comet-ledger review` and `smoke-test` (and the demo) write the pack and the smoke test's row
# directly. They are recorded in the instance as materialisations of the assets that write the
# same things (`reports/review_pack` for the month's partition, `warehouse/smoke_tests`), with the
# same metadata, so the UI shows them as it shows what a run made.

def record_review_pack(settings: Settings, pack, instance: dg.DagsterInstance | None = None) -> str | None:
    """Record `pack` (a PackResult) as the materialisation of its month's partition; returns the
    partition key, or None when the month is not one of the asset's partitions (nothing recorded)."""
    from pipelines.defs.partitions import monthly_partitions
    from pipelines.defs.reports.assets import review_pack_metadata, review_pack_partition
    from pipelines.lib import clock

    key = review_pack_partition(pack.month)
    if key not in monthly_partitions(settings).get_partition_keys(current_time=clock.now()):
        return None
    _report(settings, instance, dg.AssetMaterialization(asset_key=REVIEW_PACK, partition=key,
                                                        metadata=review_pack_metadata(pack)))
    return key


def record_smoke_test(settings: Settings, result, instance: dg.DagsterInstance | None = None) -> None:
    """Record a smoke test (a SmokeTestResult already in `smoke_tests`) as a materialisation of that table."""
    from pipelines.defs.checks.smoke_test import smoke_tests_metadata

    _report(settings, instance, dg.AssetMaterialization(
        asset_key=SMOKE_TESTS, metadata=smoke_tests_metadata(settings.warehouse_path, result)))


REVIEW_PACK = dg.AssetKey(["reports", "review_pack"])
SMOKE_TESTS = dg.AssetKey(["warehouse", "smoke_tests"])


def _report(settings: Settings, instance: dg.DagsterInstance | None, event: dg.AssetMaterialization) -> None:
    (instance or instance_for(settings)).report_runless_asset_event(event)
