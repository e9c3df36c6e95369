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
   rotated, history is not).

2. Assembly, per reporting day. `request_logs/usage_date=D/requests.parquet` holds one row per
   request_id whose winning copy falls on day D, from the current version of every file (rule in
   `sql/staging/stg_request_logs.sql`). It is replaced whole, also when it becomes empty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib import lake
from pipelines.lib.quota_lake import UTC_TS, window_days
from pipelines.lib.request_logs.normalize import RECORD_SCHEMA, Reject
from pipelines.lib.request_logs.reader import file_fingerprint, inbox_files, read_file
from pipelines.lib.warehouse import run_model

BATCH_ROWS = 50_000
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 31)  # "every day", for whole-inbox accounting

STAGED_RECORDS = RECORD_SCHEMA.append(pa.field("file_id", pa.string())).append(
    pa.field("file", pa.string())).append(pa.field("line_no", pa.int64()))
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
        ("first_usage_date", pa.date32()),
        ("last_usage_date", pa.date32()),
    ]
)
REQUEST_LOGS = RECORD_SCHEMA.append(pa.field("file", pa.string())).append(pa.field("line_no", pa.int64()))
SCHEMAS = {"inbox_records": STAGED_RECORDS, "inbox_rejects": STAGED_REJECTS, "inbox_manifest": MANIFEST,
           "request_logs": REQUEST_LOGS}


@dataclass(frozen=True)
class StagedFile:
    file: str
    file_id: str
    lines_read: int
    records: int
    rejected: int
    reject_reasons: dict[str, int]
    first_usage_date: date | None
    last_usage_date: date | None


def file_id(relative: str, content_sha256: str) -> str:
    return hashlib.sha256(f"{relative}\0{content_sha256}".encode()).hexdigest()[:32]


def is_staged(lake_root: Path, fid: str) -> bool:
    return (lake.partition_dir(lake_root, "inbox_manifest", "file_id", fid) / "manifest.parquet").exists()


@dataclass(frozen=True)
class InboxFile:
    """One version of one inbox file: where it is, its inbox-relative name, its content hash."""

    path: Path
    relative: str
    content_sha256: str

    @property
    def file_id(self) -> str:
        return file_id(self.relative, self.content_sha256)


def pending_files(lake_root: Path, inbox: Path) -> list[InboxFile]:
    """Every inbox file version not staged yet (each file is hashed once, here)."""
    found = (InboxFile(p, p.relative_to(inbox).as_posix(), file_fingerprint(p)) for p in inbox_files(inbox))
    return [f for f in found if not is_staged(lake_root, f.file_id)]


def stage_file(lake_root: Path, inbox: Path, item: InboxFile, tz: ZoneInfo, now: datetime) -> StagedFile:
    """Parse one file version into the staging datasets (records, rejects, then the manifest)."""
    path, relative, fid = item.path, item.relative, item.file_id
    records_path = lake.partition_dir(lake_root, "inbox_records", "file_id", fid) / "records.parquet"
    rejects: list[dict] = []
    reasons: dict[str, int] = {}
    counts = {"read": 0, "blank": 0, "records": 0}
    days: set[date] = set()

    def batches():
        batch: list[dict] = []
        for result in read_file(path, inbox_root=inbox, tz=tz, now=now):
            outcome = result.outcome
            if outcome is None:
                counts["blank"] += 1
                continue
            counts["read"] += 1
            if isinstance(outcome, Reject):
                reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
                rejects.append({"file_id": fid, "source": "client_log", "file": relative, "line": result.line_no,
                                "reason": outcome.reason, "detail": outcome.detail, "raw": result.raw})
                continue
            counts["records"] += 1
            days.add(outcome.usage_date)
            batch.append(outcome.to_row() | {"file_id": fid, "file": relative, "line_no": result.line_no})
            if len(batch) >= BATCH_ROWS:
                yield pa.RecordBatch.from_pylist(batch, schema=STAGED_RECORDS)
                batch = []
        yield pa.RecordBatch.from_pylist(batch, schema=STAGED_RECORDS)

    lake.write_batches_atomic(batches(), STAGED_RECORDS, records_path)
    lake.write_partition_file(lake_root, "inbox_rejects", "file_id", fid, "rejects",
                              pa.Table.from_pylist(rejects, schema=STAGED_REJECTS))
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
        "first_usage_date": min(days) if days else None,
        "last_usage_date": max(days) if days else None,
    }
    lake.write_partition_file(lake_root, "inbox_manifest", "file_id", fid, "manifest",
                              pa.Table.from_pylist([manifest], schema=MANIFEST))
    return StagedFile(relative, fid, counts["read"], counts["records"], len(rejects), reasons,
                      manifest["first_usage_date"], manifest["last_usage_date"])


def staging_params(lake_root: Path) -> dict:
    """SQL parameters: every staged dataset's files (a schema-only file stands in for none)."""
    def listed(dataset: str) -> list[str]:
        return lake.files(lake_root, dataset) or [lake.empty_file(lake_root, dataset, SCHEMAS[dataset])]

    return {
        "inbox_manifest_files": listed("inbox_manifest"),
        "inbox_record_files": listed("inbox_records"),
        "inbox_reject_files": listed("inbox_rejects"),
    }


def assemble(lake_root: Path, start: date, end: date) -> dict[date, int]:
    """Rewrite `request_logs` for every day in [start, end]; returns rows per day."""
    written: dict[date, int] = {}
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        run_model(con, "stg_inbox_files", staging_params(lake_root))
        run_model(con, "stg_request_logs", staging_params(lake_root) | {"start": start, "end": end})
        for day in window_days(start, end):
            table = con.sql(
                "SELECT * EXCLUDE (copy_rank, file_id) FROM stg_request_logs "
                "WHERE copy_rank = 1 AND usage_date = $day ORDER BY ts, request_id", params={"day": day}
            ).to_arrow_table().cast(REQUEST_LOGS)
            lake.write_partition_file(lake_root, "request_logs", "usage_date", day, "requests", table)
            written[day] = table.num_rows
    return written


def read_manifests(lake_root: Path) -> list[dict]:
    found = lake.files(lake_root, "inbox_manifest")
    return pq.read_table(found, partitioning=None).to_pylist() if found else []
