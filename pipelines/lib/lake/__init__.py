"""The Parquet lake: hive-partitioned datasets under `$COMET_LEDGER_HOME/lake`, or on object storage.

Layout: `lake/<dataset>/<partition column>=<value>/<name>.parquet`. Every file also carries its
partition column as a real column, so a file is self-describing and readers never depend on
hive path parsing.

Every write is atomic: the table is written to a hidden temporary file in the target folder,
flushed to disk, then renamed over the final name. A crash leaves either the previous file or
the new one, never half a file; temporary names do not end in `.parquet`, so readers never see
them.

With `COMET_LEDGER_LAKE_URL=s3://bucket/prefix` the lake is on S3-compatible storage
(`lake_store`): the code still passes a local root around (`attach`: the local cache
`$COMET_LEDGER_HOME/lake_cache`), and the functions here publish a file there as a data object
then its commit record, and list only committed files. Readers go through `files`,
`partition_values` and `resolve`; writers through `write_table_atomic`, `write_batches_atomic`,
or `stage` and `publish` for a write of several files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path, PurePosixPath
from typing import TypeVar
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib import clock, disk
from pipelines.lib.lake.store import ObjectLake, Staged

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


# local lake root -> the object storage it caches (`attach`)
_OBJECT_LAKES: dict[Path, ObjectLake] = {}


def root_of(home: Path, url: str | None) -> Path:
    """The lake root of a data home: `<home>/lake` by default, the folder `url` names, or, for an
    `s3://bucket/prefix` URL, the local cache `<home>/lake_cache` of that object storage. A path
    only: `attach` makes this process use the object storage."""
    if not url:
        return home / "lake"
    if not url.startswith("s3://"):
        return Path(url).expanduser().absolute()
    return home / "lake_cache"


def attach(home: Path, url: str | None) -> Path:
    """The lake root of a data home (`root_of`); for an `s3://bucket/prefix` URL, that object storage
    is from then on published to and listed from there by this module, in this process."""
    root = root_of(home, url)
    if url and url.startswith("s3://"):
        attach_root(root, url)
    return root


def attach_root(root: Path, url: str) -> None:
    known = _OBJECT_LAKES.get(root)
    if known is None or known.url != url:
        _OBJECT_LAKES[root] = ObjectLake(url, root)


def attached() -> list[tuple[Path, str]]:
    """(local root, URL) of every object lake this process knows: what a worker process is told."""
    return [(root, store.url) for root, store in _OBJECT_LAKES.items()]


def object_lake(lake: Path) -> ObjectLake | None:
    """The object storage the lake root `lake` caches, or None for a lake on local disk."""
    return _OBJECT_LAKES.get(lake)


def object_lake_of_home(home: Path) -> ObjectLake | None:
    return _OBJECT_LAKES.get(home / "lake_cache")


def _remote(path: Path) -> tuple[ObjectLake, str] | None:
    """(object storage, lake path) of a path under an object lake's root; None for a local file
    (a local lake, or a folder starting with `_`: stand-ins and caches of this machine)."""
    for root, store in _OBJECT_LAKES.items():
        if path.is_relative_to(root):
            relative = path.relative_to(root)
            if relative.parts and not relative.parts[0].startswith("_"):
                return store, relative.as_posix()
    return None


def check(lake: Path) -> None:
    """Raise `LakeUnavailable` (one line) when the lake is on object storage that cannot be used."""
    store = object_lake(lake)
    if store is not None:
        store.check()


def stage(tmp: Path, path: Path) -> Staged | None:
    """Make the complete temporary file `tmp` ready to become `path` without publishing it (object
    storage: upload its data object); `publish` then makes it visible."""
    remote = _remote(path)
    return remote[0].stage(tmp, remote[1]) if remote else None


def publish(tmp: Path, path: Path, staged: Staged | None = None) -> Path:
    """Make the complete temporary file `tmp` the current `path`: a rename on disk; on object storage
    the data object (uploaded now unless `staged`) then its commit record. Returns the local file."""
    remote = _remote(path)
    if remote is None:
        os.replace(tmp, path)
        return path
    store, logical = remote
    return store.commit(staged or store.stage(tmp, logical))


def resolve(path: Path) -> Path | None:
    """The local file holding the current version of lake file `path`, or None when there is none."""
    remote = _remote(path)
    if remote is None:
        return path if path.exists() else None
    return remote[0].resolve(remote[1])


def exists(path: Path) -> bool:
    remote = _remote(path)
    if remote is None:
        return path.exists()
    return remote[0].exists(remote[1])


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
            written = publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(written.parent)
    return written


ROW_GROUP_ROWS = 131_072  # write_batches_atomic's row groups: small ones cost ~40 % more CPU to encode


def write_batches_atomic(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path, *,
                         dictionary_columns: list[str] | None = None) -> Path:
    """Stream record batches into one file (memory stays bounded: ROW_GROUP_ROWS rows are held at a
    time, so that row groups are not as small as the batches), published like `write_table_atomic`.

    `dictionary_columns`: the only columns to dictionary-encode (default: all); naming the columns
    with few distinct values saves the encoder trying it on ids."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with disk.writing(path):
        written = _write_batches(batches, schema, path, tmp, dictionary_columns)
    fsync_dir(written.parent)
    return written


def _write_batches(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path, tmp: Path,
                   dictionary_columns: list[str] | None) -> Path:
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
        return publish(tmp, path)
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
    """The dataset's Parquet files, sorted; only the given partitions when `values` is given.
    On object storage: the committed ones, in the local cache (downloaded when missing)."""
    store = object_lake(lake)
    if store is not None:
        return _committed_files(store, dataset, column, values)
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
    prefix = f"{column}="
    store = object_lake(lake)
    if store is not None:
        return sorted({PurePosixPath(p).parent.name[len(prefix):] for p in store.committed(dataset)
                       if PurePosixPath(p).parent.name.startswith(prefix)})
    root = lake / dataset
    return sorted(p.name[len(prefix):] for p in root.glob(f"{prefix}*") if any(p.glob("*.parquet")))


def _committed_files(store: ObjectLake, dataset: str, column: str | None,
                     values: Iterable[object] | None) -> list[str]:
    committed = store.committed(dataset)
    if values is not None:
        folders = {f"{dataset}/{column}={v}" for v in values}
        committed = {p: v for p, v in committed.items() if str(PurePosixPath(p).parent) in folders}
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="lake-download") as pool:
        found = pool.map(lambda item: store.local(*item), sorted(committed.items()))
        return sorted(str(p) for p in found)
