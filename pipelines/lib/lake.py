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
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

UTC_TS = pa.timestamp("us", tz="UTC")


def window_days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
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
    fsync_dir(path.parent)
    return path


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
