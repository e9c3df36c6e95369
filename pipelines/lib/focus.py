"""The month's LLM cost in FOCUS 1.2, the FinOps Foundation's cost and usage format:
`reports/focus-YYYY-MM/` with the charges as Parquet and CSV, and manifest.json.

`export_month(...)` reads the warehouse read-only (one connection: every row comes from the same
published version) with `sql/reports/focus_charges.sql`, which says what each row is and where its
cost comes from; docs/focus.md maps every column to its source and lists what the FinOps
Foundation's validator (focus-validator) checks and skips.

- A month that has not started is refused; one that has not ended is exported only when asked
  (`partial=True`), and then every row says so (`x_PartialMonth`).
- A month without charges gives the same files with no rows, and the manifest says so.
- Same warehouse, same month: the same bytes in the Parquet and CSV files; manifest.json differs
  only in `generated_at`. The folder is replaced whole (the review pack's folder swap).
- The CSV holds what the Parquet holds, as text: amounts with 6 decimals, instants as
  `YYYY-MM-DDTHH:MM:SSZ`, NULL as an empty field. A text cell a spreadsheet would run as a formula
  is written with a leading `'`, as in the review pack (the Parquet file keeps the value as it is).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lib.review_pack.build import FORMULA_STARTS, write_folder_atomically
from pipelines.lib.review_pack.period import Period, parse_month
from pipelines.lib.warehouse import define_macros, model_path

FOCUS_VERSION = "1.2"
MODEL = "focus_charges"
REQUIRED_TABLES = ("recon_key_daily", "cost_key_model_daily", "requests", "ledger_task_adjustments",
                   "quota_restatements", "key_owners", "balance_snapshots")
# What the provider (CometAPI) supports, in the validator's terms (`--applicability-criteria`): the
# conditional FOCUS columns these bring are in the export. docs/focus.md says why the others are not.
APPLICABILITY_CRITERIA = ("ACCOUNT_NAMING_SUPPORTED", "SUB_ACCOUNT_SUPPORTED", "TAGGING_SUPPORTED",
                          "USAGE_MEASUREMENT_SUPPORTED")

MONEY = pa.decimal128(18, 6)
INSTANT = pa.timestamp("s", tz="UTC")
SCHEMA = pa.schema([
    ("BilledCost", MONEY),
    ("BillingAccountId", pa.string()),
    ("BillingAccountName", pa.string()),
    ("BillingCurrency", pa.string()),
    ("BillingPeriodEnd", INSTANT),
    ("BillingPeriodStart", INSTANT),
    ("ChargeCategory", pa.string()),
    ("ChargeClass", pa.string()),
    ("ChargeDescription", pa.string()),
    ("ChargeFrequency", pa.string()),
    ("ChargePeriodEnd", INSTANT),
    ("ChargePeriodStart", INSTANT),
    ("CommitmentDiscountStatus", pa.string()),
    ("ConsumedQuantity", pa.decimal128(24, 6)),
    ("ConsumedUnit", pa.string()),
    ("ContractedCost", MONEY),
    ("EffectiveCost", MONEY),
    ("InvoiceId", pa.string()),
    ("InvoiceIssuerName", pa.string()),
    ("ListCost", MONEY),
    ("PricingCategory", pa.string()),
    ("PricingQuantity", pa.decimal128(24, 6)),
    ("PricingUnit", pa.string()),
    ("ProviderName", pa.string()),
    ("PublisherName", pa.string()),
    ("ServiceCategory", pa.string()),
    ("ServiceName", pa.string()),
    ("ServiceSubcategory", pa.string()),
    ("SkuId", pa.string()),
    ("SkuPriceId", pa.string()),
    ("SubAccountId", pa.string()),
    ("SubAccountName", pa.string()),
    ("Tags", pa.string()),
    ("x_AllocationBasis", pa.string()),
    ("x_BillingCategory", pa.string()),
    ("x_BookedAt", pa.timestamp("us", tz="UTC")),
    ("x_CachedTokens", pa.int64()),
    ("x_ChargeKind", pa.string()),
    ("x_CompletionTokens", pa.int64()),
    ("x_CostSource", pa.string()),
    ("x_EstimatedCost", pa.float64()),
    ("x_Model", pa.string()),
    ("x_PartialMonth", pa.bool_()),
    ("x_PromptTokens", pa.int64()),
    ("x_Requests", pa.int64()),
    ("x_RestatedAt", pa.timestamp("us", tz="UTC")),
    ("x_Team", pa.string()),
    ("x_UnknownUsageRequests", pa.int64()),
    ("x_UnpricedRequests", pa.int64()),
])


class FocusError(RuntimeError):
    """The export cannot be made; the message says what is missing and what to do."""


@dataclass(frozen=True)
class FocusExport:
    path: Path  # out_dir/focus-YYYY-MM
    month: str
    partial: bool  # the month has not ended; every row says so
    rows: int
    billed_cost_usd: Decimal  # sum of BilledCost over every row
    by_kind: dict[str, Decimal]  # x_ChargeKind -> sum of BilledCost
    note: str  # what the manifest says about the data (no data, partial, or the days covered)
    files: dict[str, str]  # file name -> SHA-256, manifest.json included


def file_names(month: str) -> tuple[str, str]:
    """The Parquet and CSV file names of a month's export."""
    return f"focus_cost_and_usage_{month}.parquet", f"focus_cost_and_usage_{month}.csv"


def export_month(warehouse_path: Path, month: str, out_dir: Path, *, timezone: str, now: datetime,
                 partial: bool = False) -> FocusExport:
    """Export `month` (YYYY-MM, reporting days in `timezone`) to `out_dir/focus-YYYY-MM/`.

    `now` decides whether the month has started and ended (pipelines/lib/clock.py gives it) and is
    the manifest's `generated_at`. A month that has not ended needs `partial=True`."""
    period = parse_month(month, timezone)
    period.refuse_unstarted(now)
    today, unfinished = period.today(now), not period.is_over(now)
    if unfinished and not partial:
        raise ValueError(f"month {month} has not ended: today is {today} in {timezone}; export it with --partial "
                         "to get the month so far, marked partial in every row")
    table = read_charges(Path(warehouse_path), period, partial=unfinished)
    parquet_name, csv_name = file_names(month)
    contents = {parquet_name: parquet_bytes(table), csv_name: csv_bytes(table)}
    summary = _summary(table, period, unfinished, today)
    manifest = {
        "export": "FOCUS cost and usage dataset (FinOps Open Cost and Usage Specification)",
        "focus_version": FOCUS_VERSION,
        "month": month,
        "timezone": timezone,
        "billing_period": {"start": _instant(period.starts_at), "end": _instant(period.ends_at)},
        "partial": unfinished,
        "note": summary["note"],
        "rows": table.num_rows,
        "totals": summary["totals"],
        "generated_at": now.astimezone(UTC).isoformat(),
        "files": [{"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in sorted(contents.items())],
    }
    contents["manifest.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    target = Path(out_dir) / f"focus-{month}"
    write_folder_atomically(target, contents, "writing the FOCUS export")
    return FocusExport(
        path=target, month=month, partial=unfinished, rows=table.num_rows,
        billed_cost_usd=summary["billed"], by_kind=summary["by_kind"], note=summary["note"],
        files={name: hashlib.sha256(data).hexdigest() for name, data in sorted(contents.items())},
    )


def read_charges(warehouse_path: Path, period: Period, *, partial: bool) -> pa.Table:
    """The month's rows (`sql/reports/focus_charges.sql`) as a table of `SCHEMA`."""
    if not warehouse_path.exists():
        raise FocusError(f"no warehouse at {warehouse_path}: run `comet-ledger run` or `comet-ledger backfill` first")
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        define_macros(con)
        present = {name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views()").fetchall()}
        missing = [t for t in REQUIRED_TABLES if t not in present]
        if missing:
            raise FocusError(f"the warehouse at {warehouse_path} has no {', '.join(missing)}: run "
                             "`comet-ledger run` or `comet-ledger backfill` to build it")
        result = con.sql(model_path(MODEL).read_text(), params={
            "first": period.first_day, "last": period.last_day, "starts_at": period.starts_at,
            "ends_at": period.ends_at, "timezone": period.timezone, "partial": partial,
        }).to_arrow_table()
    if result.num_rows and result.column("BillingAccountId").null_count:
        raise FocusError(f"the warehouse at {warehouse_path} has charges for {period.month} but no balance snapshot "
                         "naming the CometAPI account: run `comet-ledger run` to take one")
    return result.select(SCHEMA.names).cast(SCHEMA)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([_cell(value) for value in row.values()])
    return buffer.getvalue().encode()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, datetime):
        return _instant(value)
    return str(value)


def _instant(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S" + (".%f" if value.microsecond else "") + "Z")


def _summary(table: pa.Table, period: Period, partial: bool, today: date) -> dict[str, Any]:
    rows = table.select(["BilledCost", "x_ChargeKind", "ChargeClass", "ChargePeriodStart"]).to_pylist()
    by_kind: dict[str, Decimal] = {}
    for row in rows:
        by_kind[row["x_ChargeKind"]] = by_kind.get(row["x_ChargeKind"], Decimal("0.000000")) + row["BilledCost"]
    billed = sum(by_kind.values(), Decimal("0.000000"))
    if not rows:
        note = (f"No charges for {period.month}: the warehouse holds no usage, ledger billing or restatement for the "
                "month, so the dataset has its columns and no rows.")
    else:
        days = len({r["ChargePeriodStart"] for r in rows if r["ChargeClass"] != "Correction"})
        corrections = sum(1 for r in rows if r["ChargeClass"] == "Correction")
        note = (f"{_count(len(rows) - corrections, 'charge')} on {days} of the month's {period.days_in_month} days, "
                f"{_count(corrections, 'correction')} of earlier months.")
    if partial:
        note += (f" Partial: {period.month} has not ended (today is {today} in {period.timezone}); every row has "
                 "x_PartialMonth = true.")
    totals = {"billed_cost_usd": format(billed, "f"),
              "by_charge_kind": {kind: format(amount, "f") for kind, amount in sorted(by_kind.items())}}
    return {"note": note, "totals": totals, "billed": billed, "by_kind": by_kind}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
