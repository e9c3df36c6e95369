"""Client-captured request logs (the inbox) → lake datasets, in two steps.

1. Staging, once per file version. Every inbox file is identified by its inbox-relative path and
   the SHA-256 of its bytes (`file_id`). A version not staged yet is parsed once into
   - `inbox_records/file_id=<id>/records.parquet`: every accepted line (duplicates included),
     with its file and line number;
   - `inbox_rejects/file_id=<id>/rejects.parquet`: every rejected line with its reason and raw text;
   - `inbox_manifest/file_id=<id>/manifest.parquet`: the file's counts, written last: a version
     counts as staged only once its manifest exists.
   A file already staged (same path, same bytes) is skipped; a changed file is a new version and
   replaces the old one; a file deleted from the inbox after staging keeps counting (inboxes are
   rotated, history is not). What the inbox holds but is not read (a symbolic link out of the
   inbox, a name that is not UTF-8: `reader.walk_inbox`) is listed, as of the latest run, in
   `inbox_skipped/listing=current/skipped.parquet` (rejects rows with source `inbox_file`).

2. Assembly, per UTC day. `request_logs/utc_date=D/requests.parquet` holds one row per request_id
   whose winning copy was made on UTC day D, from the current version of every file (rule in
   `sql/staging/stg_copy_ranks.sql`). It is replaced whole, also when it becomes empty.

Nothing here depends on the reporting time zone: records keep their UTC instant (`ts`) and UTC day
(`utc_date`), and the warehouse derives the reporting day (`sql/staging/reporting_day.sql`), so a
file staged once serves any zone.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.days import window_days
from pipelines.lib.lake import UTC_TS
from pipelines.lib.redact import remember, remembered
from pipelines.lib.request_logs.normalize import RECORD_SCHEMA
from pipelines.lib.request_logs.reader import (
    SkippedFile,
    file_fingerprint,
    inbox_files,
    raw_text,
    read_file_batches,
    walk_inbox,
)
from pipelines.lib.warehouse import run_model

MAX_WORKERS = 2  # processes staging files at once (each holds at most one batch of records)
PARALLEL_MIN_BYTES = 64 * 2**20  # smaller inboxes are staged in this process: starting workers costs ~1 s
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 31)  # "every day", for whole-inbox accounting

STAGED_RECORDS = RECORD_SCHEMA.append(pa.field("file_id", pa.string())).append(
    pa.field("file", pa.string())).append(pa.field("line_no", pa.int64()))
# staged record columns with few distinct values (the ids, times and line numbers are near unique)
DICTIONARY_COLUMNS = [n for n in STAGED_RECORDS.names
                      if n not in {"request_id", "ts", "latency_ms", "response_id", "raw_usage_json", "line_no"}]
STAGED_REJECTS = pa.schema([pa.field("file_id", pa.string()), *lake.REJECTS])
MANIFEST = pa.schema(
    [
        ("file_id", pa.string()),
        ("file", pa.string()),
        ("content_sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("staged_at", UTC_TS),
        ("lines_read", pa.int64()),
        ("blank_lines", pa.int64()),
        ("records", pa.int64()),
        ("rejected", pa.int64()),
        ("damaged", pa.bool_()),
        ("first_utc_date", pa.date32()),
        ("last_utc_date", pa.date32()),
    ]
)
REQUEST_LOGS = RECORD_SCHEMA.append(pa.field("file", pa.string())).append(pa.field("line_no", pa.int64()))
SKIPPED = lake.REJECTS.append(pa.field("listing", pa.string()))


@dataclass(frozen=True)
class StagedFile:
    file: str
    file_id: str
    lines_read: int
    records: int
    rejected: int
    reject_reasons: dict[str, int]
    first_utc_date: date | None
    last_utc_date: date | None


def file_id(relative: str, content_sha256: str) -> str:
    return hashlib.sha256(f"{relative}\0{content_sha256}".encode()).hexdigest()[:32]


def is_staged(lake_root: Path, fid: str) -> bool:
    return lake.exists(lake_datasets.INBOX_MANIFEST.path(lake_root, fid))


@dataclass(frozen=True)
class InboxFile:
    """One version of one inbox file: where it is, its inbox-relative name, its content hash."""

    path: Path
    relative: str
    content_sha256: str

    @property
    def file_id(self) -> str:
        return file_id(self.relative, self.content_sha256)


# What each inbox file hashed to, with its stat when it was hashed (`pending_files`): a cache, so
# losing it only costs hashing the inbox again.
HASHES = pa.schema([("file", pa.string()), ("size_bytes", pa.int64()), ("mtime_ns", pa.int64()),
                    ("ctime_ns", pa.int64()), ("inode", pa.int64()), ("content_sha256", pa.string())])


def _hashes_path(lake_root: Path) -> Path:
    return lake_root / "_cache" / "inbox_hashes.parquet"


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int]:
    # ctime moves on every write and cannot be set back (touch -d sets mtime only), so a file
    # rewritten to the same size with its mtime restored still counts as changed
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino


def record_skipped(lake_root: Path, inbox: Path) -> list[SkippedFile]:
    """List what the inbox holds but is not read (`reader.walk_inbox`), replacing the previous list
    (a link removed since is no longer listed); returns it."""
    skipped = walk_inbox(inbox).skipped
    rows = [{"source": "inbox_file", "file": s.file, "line": None, "reason": s.reason, "detail": s.detail,
             "raw": None, "listing": "current"} for s in skipped]
    path = lake_datasets.INBOX_SKIPPED.path(lake_root, "current")
    table = pa.Table.from_pylist(rows, schema=SKIPPED)
    current = lake.resolve(path)
    if current is None or not pq.read_table(current, schema=SKIPPED).equals(table):
        lake.write_table_atomic(table, path)
    return skipped


def pending_files(lake_root: Path, inbox: Path) -> list[InboxFile]:
    """Every inbox file version not staged yet.

    A file's content hash is taken once per version: a file whose size, mtime, ctime and inode are
    those it had when it was last hashed keeps that hash (lake/_cache/inbox_hashes.parquet), so a
    daily run does not read the whole inbox history again (a year of 100k requests a day is
    13.5 GiB, ~20 s of hashing per run). The others are hashed two at a time (hashlib lets go of
    the GIL); their stat is taken before their bytes are read, so a file written meanwhile is
    hashed again next time.
    """
    paths = inbox_files(inbox)
    relatives = [p.relative_to(inbox).as_posix() for p in paths]
    keys = [_stat_key(p.stat()) for p in paths]
    known = _known_hashes(lake_root)
    digests: list[str | None] = [
        known[r][1] if r in known and known[r][0] == key else None for r, key in zip(relatives, keys)]
    unknown = [i for i, digest in enumerate(digests) if digest is None]
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
        for i, digest in zip(unknown, pool.map(file_fingerprint, [paths[i] for i in unknown])):
            digests[i] = digest
    if unknown or len(known) != len(paths):
        rows = [dict(zip(HASHES.names, (r, *key, digest))) for r, key, digest in zip(relatives, keys, digests)]
        lake.write_table_atomic(pa.Table.from_pylist(rows, schema=HASHES), _hashes_path(lake_root))
    found = (InboxFile(p, r, digest) for p, r, digest in zip(paths, relatives, digests))
    if lake.object_lake(lake_root) is not None:  # one listing, not a request per inbox file
        staged = set(lake_datasets.INBOX_MANIFEST.partition_values(lake_root))
        return [f for f in found if f.file_id not in staged]
    return [f for f in found if not is_staged(lake_root, f.file_id)]


def _known_hashes(lake_root: Path) -> dict[str, tuple[tuple[int, int, int, int], str]]:
    """file -> (stat key, content hash) from the cache; empty when there is none or it is unreadable."""
    try:
        table = pq.read_table(_hashes_path(lake_root), schema=HASHES)
    except (OSError, pa.ArrowException):
        return {}
    columns = [table[name].to_pylist() for name in HASHES.names]
    return {file: ((size, mtime, ctime, inode), digest) for file, size, mtime, ctime, inode, digest in zip(*columns)}


def stage_file(lake_root: Path, inbox: Path, item: InboxFile, now: datetime) -> StagedFile:
    """Parse one file version into the staging datasets (records, rejects, then the manifest)."""
    path, relative, fid = item.path, item.relative, item.file_id
    records_path = lake_datasets.INBOX_RECORDS.path(lake_root, fid)
    rejects: list[dict] = []
    reasons: dict[str, int] = {}
    counts = {"read": 0, "blank": 0, "records": 0}
    days: set[date] = set()

    def batches():
        for batch in read_file_batches(path, inbox_root=inbox, now=now):
            counts["blank"] += batch.blank
            counts["read"] += batch.records.num_rows + len(batch.rejects)
            counts["records"] += batch.records.num_rows
            for line_no, reject, line in batch.rejects:
                reasons[reject.reason] = reasons.get(reject.reason, 0) + 1
                rejects.append({"file_id": fid, "source": "client_log", "file": relative, "line": line_no,
                                "reason": reject.reason, "detail": reject.detail, "raw": raw_text(line)})
            if batch.records.num_rows:
                days.update(pc.unique(batch.records["utc_date"]).to_pylist())
            rows = batch.records.num_rows
            yield (batch.records.append_column("file_id", pa.array([fid] * rows, pa.string()))
                   .append_column("file", pa.array([relative] * rows, pa.string()))
                   .select(STAGED_RECORDS.names).cast(STAGED_RECORDS).to_batches())

    lake.write_batches_atomic((b for table in batches() for b in table), STAGED_RECORDS, records_path,
                              dictionary_columns=DICTIONARY_COLUMNS)
    lake_datasets.INBOX_REJECTS.write(lake_root, fid, pa.Table.from_pylist(rejects, schema=STAGED_REJECTS))
    manifest = {
        "file_id": fid,
        "file": relative,
        "content_sha256": item.content_sha256,
        "size_bytes": path.stat().st_size,
        "staged_at": now,
        "lines_read": counts["read"],
        "blank_lines": counts["blank"],
        "records": counts["records"],
        "rejected": len(rejects),
        "damaged": reasons.get("corrupt_gzip", 0) > 0,
        "first_utc_date": min(days) if days else None,
        "last_utc_date": max(days) if days else None,
    }
    lake_datasets.INBOX_MANIFEST.write(lake_root, fid, pa.Table.from_pylist([manifest], schema=MANIFEST))
    return StagedFile(relative, fid, counts["read"], counts["records"], len(rejects), reasons,
                      manifest["first_utc_date"], manifest["last_utc_date"])


def stage_files(lake_root: Path, inbox: Path, items: list[InboxFile], now: datetime, *,
                workers: int | None = None) -> Iterator[StagedFile]:
    """`stage_file` for each item, in worker processes when there is enough work to share (yields as they finish).

    Each file is staged whole by one process, and its manifest is still written last, so a crash
    leaves every file either staged or not. Below `PARALLEL_MIN_BYTES` one process is faster.
    """
    workers = workers if workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
    size = sum(item.path.stat().st_size for item in items)
    if workers <= 1 or len(items) <= 1 or size < PARALLEL_MIN_BYTES:
        for item in items:
            yield stage_file(lake_root, inbox, item, now)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads (Dagster's)
    # a spawned worker starts knowing no secret: it is told the configured ones, to mask them in raw text
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context,
                             initializer=_start_worker, initargs=(remembered(), lake.attached())) as pool:
        # Largest files first, so that one big file does not start last and run alone.
        ordered = sorted(items, key=lambda item: item.path.stat().st_size, reverse=True)
        futures = [pool.submit(stage_file, lake_root, inbox, item, now) for item in ordered]
        for future in as_completed(futures):
            yield future.result()


def _start_worker(secrets: tuple[str, ...], object_lakes: list[tuple[Path, str]]) -> None:
    """A spawned staging worker starts knowing nothing: the secrets to mask, the lakes on object storage."""
    remember(*secrets)
    for root, url in object_lakes:
        lake.attach_root(root, url)


def staging_params(lake_root: Path) -> dict:
    """SQL parameters: every staged dataset's files (a schema-only file stands in for none)."""
    return {
        "inbox_manifest_files": lake_datasets.INBOX_MANIFEST.files_or_empty(lake_root),
        "inbox_record_files": lake_datasets.INBOX_RECORDS.files_or_empty(lake_root),
        "inbox_reject_files": lake_datasets.INBOX_REJECTS.files_or_empty(lake_root),
        "inbox_skipped_files": lake_datasets.INBOX_SKIPPED.files_or_empty(lake_root),
    }


def conflict_params(con: duckdb.DuckDBPyConnection, lake_root: Path) -> dict:
    """SQL parameter of `request_conflicts`: the record files holding a copy of an id that has more
    than one (read after `stg_copy_ranks`); only those are opened, not every file ever staged."""
    holding = [f for (f,) in con.execute(
        "SELECT DISTINCT file_id FROM stg_copy_ranks WHERE request_id IN "
        "(SELECT request_id FROM stg_copy_ranks WHERE copy_rank > 1) ORDER BY file_id").fetchall()]
    return {"conflict_record_files": lake_datasets.INBOX_RECORDS.files_or_empty(lake_root, holding)}


def assemble(lake_root: Path, start: date, end: date) -> dict[date, int]:
    """Rewrite `request_logs` for every UTC day in [start, end]; returns rows per day."""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        params = staging_params(lake_root)
        run_model(con, "stg_inbox_files", params)
        window = params | {"start": start, "end": end}
        run_model(con, "stg_copy_ranks", window)
        # the winners' rows are fetched whole from the files that hold one, not from every file ever
        # staged (DuckDB would read every column of every file to find them)
        holding = [f for (f,) in con.execute(
            "SELECT DISTINCT file_id FROM stg_copy_ranks WHERE copy_rank = 1 ORDER BY file_id").fetchall()]
        # plus a schema-only file: files staged by an older version lack the newer columns, which
        # union_by_name then reads as NULL ("not reported") instead of failing
        found = lake_datasets.INBOX_RECORDS.files_and_empty(lake_root, holding)
        run_model(con, "stg_request_logs", window | {"inbox_record_files": found})

        def day_rows(day: date) -> pa.Table:
            table = con.sql("SELECT * EXCLUDE (file_id) FROM stg_request_logs WHERE utc_date = $day "
                            "ORDER BY ts, request_id", params={"day": day}).to_arrow_table()
            return table.select(REQUEST_LOGS.names).cast(REQUEST_LOGS)  # by name: older files order columns otherwise

        def write(day: date, table: pa.Table) -> int:
            lake_datasets.REQUEST_LOGS.write(lake_root, day, table)
            return table.num_rows

        days = window_days(start, end)
        return dict(zip(days, lake.made_then_written(days, day_rows, write)))


def read_manifests(lake_root: Path) -> list[dict]:
    found = lake_datasets.INBOX_MANIFEST.files(lake_root)
    return pq.read_table(found, partitioning=None).to_pylist() if found else []
