"""Write the monthly budget-review evidence pack: `out_dir/review-YYYY-MM/`.

The pack is built in a hidden sibling folder and swapped in whole, so a reader sees the previous
pack or the new one, never a half-written mix; a re-run replaces it. The CSVs are opened in
spreadsheets, which run a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (a key name from a client log, a team from key_owners.csv): such a text cell is written
with a leading `'` (OWASP's advice), which spreadsheets show as text and do not run; numbers are
written as they are. Every file is a function of
the warehouse, the lake and the inbox alone: the same month built twice from the same data gives
the same bytes, except `built_at` in manifest.json.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib import disk
from pipelines.lib.lake import fsync_dir
from pipelines.lib.review_pack.compose import PackFiles, compose, data_coverage
from pipelines.lib.review_pack.document import usd
from pipelines.lib.review_pack.figures import ANOMALY_COLUMNS, MonthFigures, read_month
from pipelines.lib.review_pack.period import day_ranges, parse_month
from pipelines.lib.review_pack.render import to_html, to_markdown
from pipelines.lib.review_pack.sample import sample_jsonl, sample_responses

SAMPLE_PER_SHAPE = 3
EXPORT_SCHEMA = pa.schema([
    ("usage_date", pa.date32()),
    ("key_name", pa.string()),
    ("team", pa.string()),
    ("reported_cost_usd", pa.decimal128(18, 6)),
    ("reported_requests", pa.int64()),
    ("pulled_at", pa.timestamp("us", tz="UTC")),
    ("pull_id", pa.string()),
])
RECON_COLUMNS = ("usage_date", "key_name", "team", "reported_cost_usd", "reported_requests", "estimated_cost_usd",
                 "logged_requests", "is_partial_day",
                 "billed_cost_usd", "gateway_requests", "variance_usd", "variance_pct",
                 "tolerance_usd", "status", "is_flagged", "coverage_pct", "unpriced_requests", "unknown_usage_requests",
                 "gateway_only_requests", "gateway_only_usd", "client_only_requests", "adjustments_usd", "explanation")
PERCENT_COLUMNS = {"variance_pct", "coverage_pct"}


@dataclass(frozen=True)
class PackResult:
    path: Path  # out_dir/review-YYYY-MM
    month: str
    files: dict[str, str]  # file name -> SHA-256, manifest.json included
    totals: dict[str, Any]  # as in manifest.json
    days_in_month: int
    days_with_data: int
    coverage: str  # the pack's sentence on which days have data
    has_data: bool
    partial: bool  # built before the month ended
    flagged_key_days: int
    anomalies: int | None  # None: anomaly detection has not run
    sample_size: int


def build_pack(warehouse_path: Path, lake_root: Path, inbox: Path, month: str, out_dir: Path, *,
               timezone: str, built_at: datetime) -> PackResult:
    """Build the pack for `month` (YYYY-MM, reporting days in `timezone`) and swap it into `out_dir`."""
    period = parse_month(month, timezone)
    period.refuse_unstarted(built_at)
    figures = read_month(Path(warehouse_path), Path(lake_root), period)
    sample = sample_responses(Path(lake_root), Path(inbox), period, SAMPLE_PER_SHAPE)

    names = PackFiles(
        export_csv=f"quota_daily_{month}.csv", export_parquet=f"quota_daily_{month}.parquet",
        recon_csv=f"recon_key_daily_{month}.csv", anomalies_csv=f"anomalies_{month}.csv",
        sample="sample_responses.jsonl",
        spend_chart="daily_spend_by_key.svg", variance_chart="estimated_vs_reported.svg",
        sample_count=len(sample), sample_shapes=tuple(sorted({r["usage_shape"] for r in sample})),
        sample_unavailable=sum(1 for r in sample if r["response"] is None), sample_per_shape=SAMPLE_PER_SHAPE,
    )
    # matplotlib is imported here, not with the module: it is 0.6 s of the 1.4 s it takes a process to
    # load the Dagster definitions (python -X importtime), and most processes draw no chart.
    from pipelines.lib.review_pack import charts

    images = {names.spend_chart: charts.daily_spend_by_key(figures),
              names.variance_chart: charts.estimated_vs_reported(figures)}
    partial = not period.is_over(built_at)  # the month so far
    document = compose(figures, names, partial=partial)
    contents: dict[str, bytes] = {
        names.export_csv: _export_csv(figures),
        names.export_parquet: _export_parquet(figures),
        names.recon_csv: _recon_csv(figures),
        names.anomalies_csv: _anomalies_csv(figures),
        names.sample: sample_jsonl(sample),
        **images,
        "reconciliation.md": to_markdown(document).encode(),
        "reconciliation.html": to_html(document, images).encode(),
    }
    totals = _manifest_totals(figures, len(sample))
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())}
    manifest = {
        "pack": "Comet Ledger budget-review evidence pack",
        "period": {
            "month": month, "first_day": period.first_day.isoformat(), "last_day": period.last_day.isoformat(),
            "timezone": timezone, "days_in_month": period.days_in_month,
            "days_with_data": len(figures.reported_days), "data_days": day_ranges(figures.reported_days),
            "coverage": data_coverage(figures),
            "partial": partial,
            "partial_days": [d.isoformat() for d in figures.partial_days],
        },
        "built_at": built_at.astimezone(UTC).isoformat(),
        "totals": totals,
        "files": [{"path": name, "sha256": hashes[name], "bytes": len(contents[name])} for name in hashes],
    }
    contents["manifest.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()

    target = Path(out_dir) / f"review-{month}"
    write_folder_atomically(target, contents, "writing the review pack")
    return PackResult(
        path=target, month=month,
        files={name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())},
        totals=totals, days_in_month=period.days_in_month, days_with_data=len(figures.reported_days),
        coverage=data_coverage(figures), has_data=figures.has_data, partial=partial,
        flagged_key_days=int(figures.totals["flagged_key_days"]),
        anomalies=None if figures.anomalies is None else len(figures.anomalies), sample_size=len(sample),
    )


# --- files -------------------------------------------------------------------------------------


def _export_csv(figures: MonthFigures) -> bytes:
    return _csv([f.name for f in EXPORT_SCHEMA], [
        [_cell(r[name], name) for name in EXPORT_SCHEMA.names] for r in figures.export])


def _export_parquet(figures: MonthFigures) -> bytes:
    table = pa.Table.from_pylist(
        [{name: r[name] for name in EXPORT_SCHEMA.names} for r in figures.export], schema=EXPORT_SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _recon_csv(figures: MonthFigures) -> bytes:
    return _csv(list(RECON_COLUMNS), [[_cell(r[name], name) for name in RECON_COLUMNS] for r in figures.recon])


def _anomalies_csv(figures: MonthFigures) -> bytes:
    """The month's findings, evidence in full (the report shortens it); the header alone when none
    were found or detection has not run."""
    columns = figures.anomaly_columns or list(ANOMALY_COLUMNS)
    return _csv(columns, [[_cell(r[name], name) for name in columns] for r in figures.anomalies or []])


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, column: str) -> str:
    """CSV text: money with 6 decimals, UTC instants in ISO 8601 with `Z`, empty for NULL; a text
    that a spreadsheet would run as a formula is prefixed with `'`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if column in PERCENT_COLUMNS:
        return f"{float(value):.4f}"
    if isinstance(value, (Decimal, float)):
        return usd(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _manifest_totals(figures: MonthFigures, sample_size: int) -> dict[str, Any]:
    t = figures.totals

    def money(name: str) -> str | None:
        return None if t[name] is None else usd(t[name])

    return {
        "reported_cost_usd": money("reported_cost_usd"),
        "reported_requests": int(t["reported_requests"]),
        "reported_key_days": int(t["reported_key_days"]),
        "estimated_cost_usd": money("estimated_cost_usd"),
        "billed_cost_usd": money("billed_cost_usd"),
        "variance_usd": money("variance_usd"),
        "logged_requests": int(t["logged_requests"]),
        "gateway_requests": None if t["gateway_requests"] is None else int(t["gateway_requests"]),
        "key_days": int(t["key_days"]),
        "flagged_key_days": int(t["flagged_key_days"]),
        "not_matched_key_days": int(t["not_matched_key_days"]),
        "coverage_pct": (None if not t["reported_cost_usd"]
                         else f"{100 * float(t['estimated_cost_usd']) / float(t['reported_cost_usd']):.2f}"),
        "requests": int(t["requests"]),
        "unpriced_requests": int(t["unpriced_requests"]),
        "opening_balance_usd": None if figures.opening_balance is None else usd(figures.opening_balance["balance_usd"]),
        "closing_balance_usd": None if figures.closing is None else usd(figures.closing["balance_usd"]),
        "anomalies": None if figures.anomalies is None else len(figures.anomalies),
        "sample_responses": sample_size,
        "price_versions": len(figures.price_versions),
        "export_rows": len(figures.export),
        "export_requests": sum(int(r["reported_requests"]) for r in figures.export),
    }


# --- publishing --------------------------------------------------------------------------------


def write_folder_atomically(target: Path, contents: dict[str, bytes], what: str) -> None:
    """Write every file into a hidden sibling folder, then swap it in for `target` (also used by the
    FOCUS export, pipelines/lib/focus.py); `what` names the write if the disk fills up."""
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    with disk.writing(target / "manifest.json", what):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        try:
            for name, data in contents.items():
                with open(staging / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            fsync_dir(staging)
            _swap_in(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    fsync_dir(target.parent)


def _swap_in(staging: Path, target: Path) -> None:
    """`staging` becomes `target`; the old pack, if any, ends up in `staging` (removed by the caller).

    Where the kernel and file system can (Linux renameat2 RENAME_EXCHANGE) the two folders trade
    places in one step; elsewhere the old pack is moved aside first, leaving a moment without one
    but never a half-written pack.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        return
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    os.replace(target, aside)
    os.replace(staging, target)
    os.replace(aside, staging)


def _exchange(a: Path, b: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), f"could not swap {a} into {b}")
