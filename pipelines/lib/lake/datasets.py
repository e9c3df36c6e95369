"""The lake's datasets, named once: each one's folder, partition column, file name and Arrow schema.

A dataset is a folder of the lake holding one Hive-style partition per value of its partition column
(`<name>/<column>=<value>/<file>.parquet`). Where a partition holds one fixed file its name is given
(`file`); where it holds one file per pull or snapshot (named by its id) `file` is None. The schema is
the constant its writer defines (`schema_ref`, "module:NAME"), looked up when first asked for, so the
writing modules can name their datasets from here without an import cycle.

Everything else under the lake root is not a dataset: `_schemas/` (the zero-row placeholders
`empty` writes), `_layout/` (lake/layout.py's marker) and `_cache/` (request_logs/lake.py's inbox hashes).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from pipelines.lib import lake


@dataclass(frozen=True)
class Dataset:
    name: str
    partition: str  # the Hive partition column of its folders
    file: str | None  # the one file a partition holds ("<file>.parquet"); None: one file per pull/snapshot id
    schema_ref: str  # "module:NAME" of the Arrow schema its writer uses

    @property
    def key(self) -> list[str]:
        """The key of the lake asset that writes it (`["lake", name]`)."""
        return ["lake", self.name]

    @cached_property
    def schema(self) -> pa.Schema:
        module, name = self.schema_ref.split(":")
        return getattr(importlib.import_module(module), name)

    def partition_dir(self, lake_root: Path, value: object) -> Path:
        return lake.partition_dir(lake_root, self.name, self.partition, value)

    def path(self, lake_root: Path, value: object, file: str | None = None) -> Path:
        """The partition's file: the fixed one, or `file` (a pull or snapshot id)."""
        return self.partition_dir(lake_root, value) / f"{file or self.file}.parquet"

    def write(self, lake_root: Path, value: object, table: pa.Table, file: str | None = None) -> Path:
        """Write the partition's file atomically (lake.write_partition_file)."""
        return lake.write_partition_file(lake_root, self.name, self.partition, value, file or self.file, table)

    def files(self, lake_root: Path, values: Iterable[object] | None = None) -> list[str]:
        """The dataset's Parquet files, sorted; only the partitions `values` when given (lake.files)."""
        return lake.files(lake_root, self.name, self.partition if values is not None else None, values)

    def partition_values(self, lake_root: Path) -> list[str]:
        return lake.partition_values(lake_root, self.name, self.partition)

    def empty(self, lake_root: Path) -> str:
        """A zero-row file with the dataset's schema, so SQL reads "no files" as "no rows" (lake.empty_file)."""
        return lake.empty_file(lake_root, self.name, self.schema)

    def files_or_empty(self, lake_root: Path, values: Iterable[object] | None = None) -> list[str]:
        """The files, or the zero-row placeholder when there are none."""
        return self.files(lake_root, values) or [self.empty(lake_root)]

    def files_and_empty(self, lake_root: Path, values: Iterable[object] | None = None) -> list[str]:
        """The files and the placeholder always: a file written before a column existed reads it as NULL."""
        return self.files(lake_root, values) + [self.empty(lake_root)]


_RL, _GW, _Q, _CAT = ("pipelines.lib.request_logs.lake", "pipelines.lib.gateway.lake", "pipelines.lib.quota.lake",
                      "pipelines.lib.prices.catalog")

# request logs (request_log_lake): staging per inbox file version, assembly per UTC day
INBOX_RECORDS = Dataset("inbox_records", "file_id", "records", f"{_RL}:STAGED_RECORDS")
INBOX_REJECTS = Dataset("inbox_rejects", "file_id", "rejects", f"{_RL}:STAGED_REJECTS")
INBOX_MANIFEST = Dataset("inbox_manifest", "file_id", "manifest", f"{_RL}:MANIFEST")
INBOX_SKIPPED = Dataset("inbox_skipped", "listing", "skipped", f"{_RL}:SKIPPED")
REQUEST_LOGS = Dataset("request_logs", "utc_date", "requests", f"{_RL}:REQUEST_LOGS")
# gateway ledger (gateway_lake)
GATEWAY_LOGS = Dataset("gateway_logs", "utc_date", "ledger", f"{_GW}:GATEWAY_SCHEMA")
GATEWAY_PULLS = Dataset("gateway_pulls", "pulled_date", None, f"{_GW}:GATEWAY_PULLS")
GATEWAY_REJECTS = Dataset("gateway_rejects", "pull_id", "rejects", f"{_GW}:REJECTS")
GATEWAY_CHECKS = Dataset("gateway_checks", "pulled_date", None, f"{_GW}:GATEWAY_CHECKS")
# query service (quota_lake)
QUOTA_DAILY = Dataset("quota_daily", "usage_date", None, f"{_Q}:QUOTA_DAILY")
QUOTA_PULLS = Dataset("quota_pulls", "pulled_date", None, f"{_Q}:QUOTA_PULLS")
BALANCE_SNAPSHOTS = Dataset("balance_snapshots", "fetched_date", None, f"{_Q}:BALANCE_SNAPSHOTS")
KEY_SNAPSHOTS = Dataset("key_snapshots", "fetched_date", None, f"{_Q}:KEY_SNAPSHOTS")
# model catalog (catalog)
CATALOG_SNAPSHOTS = Dataset("catalog_snapshots", "snapshot_date", "models", f"{_CAT}:CATALOG_SNAPSHOTS")
CATALOG_REJECTS = Dataset("catalog_rejects", "snapshot_date", "rejects", "pipelines.lib.lake:REJECTS")

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    INBOX_RECORDS, INBOX_REJECTS, INBOX_MANIFEST, INBOX_SKIPPED, REQUEST_LOGS,
    GATEWAY_LOGS, GATEWAY_PULLS, GATEWAY_REJECTS, GATEWAY_CHECKS,
    QUOTA_DAILY, QUOTA_PULLS, BALANCE_SNAPSHOTS, KEY_SNAPSHOTS,
    CATALOG_SNAPSHOTS, CATALOG_REJECTS,
)}


def dataset(name: str) -> Dataset:
    return DATASETS[name]


def names(*datasets: Dataset) -> tuple[str, ...]:
    return tuple(d.name for d in datasets)
