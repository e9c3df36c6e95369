"""The Parquet lake: hive-partitioned datasets under `$COMET_LEDGER_HOME/lake`.

Layout: `lake/<dataset>/<partition column>=<value>/<name>.parquet`. Every file also carries its
partition column as a real column, so a file is self-describing and readers never depend on
hive path parsing.

Every write is atomic: the table is written to a hidden temporary file in the target folder,
flushed to disk, then renamed over the final name. A crash leaves either the previous file or
the new one, never half a file; temporary names do not end in `.parquet`, so readers never see
them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib import clock, disk

UTC_TS = pa.timestamp("us", tz="UTC")


def utc_days_covering(start: date, end: date, zone: str | ZoneInfo) -> tuple[date, date]:
    """The UTC days [first, last] that hold every instant of reporting days [start, end] in `zone`.

    The lake keeps request logs and the gateway ledger by UTC day; a reporting day in a zone ahead
    of or behind UTC spans two of them (Asia/Shanghai's D is 16:00 UTC on D-1 to 16:00 UTC on D).
    """
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    first = datetime.combine(start, time(), tz).astimezone(UTC).date()
    last = (datetime.combine(end + timedelta(days=1), time(), tz).astimezone(UTC) - timedelta(microseconds=1)).date()
    return first, max(first, last)


def reporting_days_of(first_utc: date, last_utc: date, zone: str | ZoneInfo) -> tuple[date, date]:
    """The reporting days in `zone` that UTC days [first_utc, last_utc] touch."""
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    first = datetime.combine(first_utc, time(), UTC).astimezone(tz).date()
    last = (datetime.combine(last_utc + timedelta(days=1), time(), UTC) - timedelta(microseconds=1)).astimezone(tz).date()
    return first, last


# What an unusable input line or row looks like in the lake, whatever its source.
REJECTS = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)


def partition_dir(lake: Path, dataset: str, column: str, value: object) -> Path:
    return lake / dataset / f"{column}={value}"


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` so that `path` is either absent/old or complete."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with disk.writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(path.parent)
    return path


ROW_GROUP_ROWS = 131_072  # write_batches_atomic's row groups: small ones cost ~40 % more CPU to encode


def write_batches_atomic(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path, *,
                         dictionary_columns: list[str] | None = None) -> Path:
    """Stream record batches into one file (memory stays bounded: ROW_GROUP_ROWS rows are held at a
    time, so that row groups are not as small as the batches), published like `write_table_atomic`.

    `dictionary_columns`: the only columns to dictionary-encode (default: all); naming the columns
    with few distinct values saves the encoder trying it on ids."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with disk.writing(path):
        _write_batches(batches, schema, path, tmp, dictionary_columns)
    fsync_dir(path.parent)
    return path


def _write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path, tmp: Path,
                   dictionary_columns: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        dictionary = True if dictionary_columns is None else dictionary_columns
        with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=dictionary) as writer:
            held: list[pa.RecordBatch] = []
            for batch in batches:
                held.append(batch)
                if sum(b.num_rows for b in held) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(held, schema), row_group_size=ROW_GROUP_ROWS)
                    held = []
            if any(b.num_rows for b in held):
                writer.write_table(pa.Table.from_batches(held, schema), row_group_size=ROW_GROUP_ROWS)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


STALE_TEMPORARY_S = 24 * 3600  # a writer's hidden temporary file older than this was left by a killed process


def remove_stale_temporaries(lake: Path, datasets: Iterable[str], kept_s: float = STALE_TEMPORARY_S,
                             now: float | None = None) -> list[Path]:
    """Remove the hidden temporary files (`<partition>/.*.tmp`) that a writer killed mid-way (SIGKILL,
    power loss) left in `datasets`, once older than `kept_s`; returns them. Readers never list hidden
    files, so they only take space; a writer still at work has a younger one."""
    cutoff = (clock.filesystem_now(lake) if now is None else now) - kept_s
    removed = []
    for dataset in datasets:
        for path in (lake / dataset).glob("*/.*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer finished or removed it meanwhile
                continue
    return removed


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_partition_file(
    lake: Path, dataset: str, column: str, value: object, name: str, table: pa.Table
) -> Path:
    """Write one file into one partition (`name` without extension)."""
    return write_table_atomic(table, partition_dir(lake, dataset, column, value) / f"{name}.parquet")


Item, Made, Written = TypeVar("Item"), TypeVar("Made"), TypeVar("Written")


def made_then_written(items: Iterable[Item], make: Callable[[Item], Made],
                      write: Callable[[Item, Made], Written]) -> list[Written]:
    """`write(item, make(item))` for each item in order; each write runs in a second thread while
    the next item is made (a query and a Parquet encode overlap instead of taking turns; both let
    go of the GIL). At most two made items are held at once. `make` runs in the calling thread
    (a DuckDB connection stays in its thread); the first exception is raised after the write
    under way has finished."""
    written: list[Written] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer") as writer:
        pending = None
        for item in items:
            made = make(item)
            if pending is not None:
                written.append(pending.result())
            pending = writer.submit(write, item, made)
        if pending is not None:
            written.append(pending.result())
    return written


def files(lake: Path, dataset: str, column: str | None = None, values: Iterable[object] | None = None) -> list[str]:
    """The dataset's Parquet files, sorted; only the given partitions when `values` is given."""
    root = lake / dataset
    if values is None:
        found = root.glob("*/*.parquet")
    else:
        found = (f for v in values for f in partition_dir(lake, dataset, column, v).glob("*.parquet"))
    return sorted(str(p) for p in found if not p.name.startswith("."))


def empty_file(lake: Path, dataset: str, schema: pa.Schema) -> str:
    """A zero-row file with the dataset's schema, so SQL can read "no files" as "no rows"."""
    path = lake / "_schemas" / f"{dataset}.parquet"
    if not path.exists() or pq.read_schema(path) != schema:
        write_table_atomic(schema.empty_table(), path)
    return str(path)


def partition_values(lake: Path, dataset: str, column: str) -> list[str]:
    """The values of a dataset's partitions that hold at least one file, sorted."""
    root = lake / dataset
    prefix = f"{column}="
    return sorted(p.name[len(prefix):] for p in root.glob(f"{prefix}*") if any(p.glob("*.parquet")))
