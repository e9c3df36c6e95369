"""A lake written by an older version kept reporting days; this one keeps UTC days. Converted once.

The older layout stored each request and ledger row under its reporting day in the zone configured
when it was landed (`request_logs/usage_date=D`, `gateway_logs/usage_date=D`, a `usage_date`
column in `inbox_records`, reporting days in `gateway_pulls`, `gateway_checks` and
`inbox_manifest`). Every row also keeps its UTC instant, so nothing is re-pulled:

1. `inbox_records`: each file gets `utc_date` (the UTC day of `ts`) in place of `usage_date`, and its
   manifest the first and last UTC day;
2. `gateway_logs`: every row is written again under the UTC day of `created_at` (deduplicated as a
   pull would), then the reporting-day folders are removed;
3. `gateway_pulls`: a pull said which reporting days it covered; it now says the UTC days it covered
   whole: the same days when every landed row's reporting day was its UTC day (the zone was UTC),
   else one day fewer on the side(s) where the old zone's days stuck out of the UTC ones;
4. `gateway_checks`: the checked day becomes `utc_date`, as the day files it named;
5. `request_logs`: the reporting-day folders are removed and every UTC day is assembled from the
   staged records (`request_log_lake.assemble`).

Each step is idempotent and works file by file (temporary file, rename), so a crash leaves a lake
the next run converts further; `lake/_layout/utc_days.parquet` is written last and ends the checks.
The whole conversion holds `lake.layout.lock` beside the lake (as the warehouse's lock sits beside
it: the lake itself holds only Parquet files and hidden temporaries), so two runs do not convert at
once.
"""

from __future__ import annotations

import fcntl
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.lib import lake
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.lib.gateway import lake as gateway_lake
from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.lib.gateway.ledger import GATEWAY_SCHEMA, dedupe_sorted

MARKER = Path("_layout") / "utc_days.parquet"
_US_PER_DAY = 86_400 * 1_000_000


def is_current(lake_root: Path) -> bool:
    return (lake_root / MARKER).exists()


def ensure_utc_days(lake_root: Path) -> str | None:
    """Convert a lake in the older layout (module docstring); returns one line saying what was converted,
    or None when there was nothing to convert (a lake on object storage was never in the older layout)."""
    if lake.object_lake(lake_root) is not None or is_current(lake_root):
        return None
    marker = lake_root / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(lake_root.with_name(lake_root.name + ".layout.lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if marker.exists():  # another run converted it meanwhile
                return None
            files = _convert_inbox_records(lake_root)
            rows, ahead, behind = _convert_gateway_logs(lake_root)
            pulls = _convert_gateway_pulls(lake_root, ahead, behind)
            _convert_gateway_checks(lake_root)
            requests = _reassemble_request_logs(lake_root)
            lake.write_table_atomic(pa.table({"layout": ["utc_days"]}), marker)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    if not (files or rows or pulls or requests):
        return None
    return (f"lake converted to UTC days: {files} staged inbox file(s), {rows} gateway ledger row(s), "
            f"{pulls} pull record(s); request_logs assembled again ({requests} requests)")


def _utc_days(ts: pa.ChunkedArray) -> pa.Array:
    micros = pc.cast(pc.cast(ts, pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.cast(pc.cast(pc.floor(pc.divide(pc.cast(micros, pa.float64()), float(_US_PER_DAY))), pa.int32()),
                   pa.date32())


def _convert_inbox_records(lake_root: Path) -> int:
    converted = 0
    for path in map(Path, lake_datasets.INBOX_RECORDS.files(lake_root)):
        table = pq.read_table(path, partitioning=None)
        if "utc_date" in table.column_names:
            continue
        days = _utc_days(table["ts"])
        table = table.append_column("utc_date", days)
        if "usage_date" in table.column_names:
            table = table.drop_columns(["usage_date"])
        names = [n for n in request_log_lake.STAGED_RECORDS.names if n in table.column_names]
        lake.write_table_atomic(table.select(names), path)
        _convert_manifest(lake_root, path.parent.name.split("=", 1)[1], days)
        converted += 1
    for path in map(Path, lake_datasets.INBOX_MANIFEST.files(lake_root)):  # a file without records
        if "first_utc_date" not in pq.read_schema(path).names:
            _convert_manifest(lake_root, path.parent.name.split("=", 1)[1], pa.array([], pa.date32()))
    return converted


def _convert_manifest(lake_root: Path, fid: str, days: pa.Array) -> None:
    path = lake_datasets.INBOX_MANIFEST.path(lake_root, fid)
    if not path.exists():
        return
    row = pq.read_table(path, partitioning=None).to_pylist()[0]
    found = pc.min_max(days)
    row["first_utc_date"], row["last_utc_date"] = found["min"].as_py(), found["max"].as_py()
    lake.write_table_atomic(pa.Table.from_pylist([row], schema=request_log_lake.MANIFEST), path)


def _convert_gateway_logs(lake_root: Path) -> tuple[int, bool, bool]:
    """(rows converted, old reporting days ahead of UTC days, behind them)."""
    old = sorted((lake_root / lake_datasets.GATEWAY_LOGS.name).glob("usage_date=*"))
    if not old:
        return 0, False, False
    files = [str(f) for folder in old for f in folder.glob("*.parquet")]
    rows, ahead, behind = 0, False, False
    if files:
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            schema_file = lake.empty_file(lake_root, f"{lake_datasets.GATEWAY_LOGS.name}_v1", GATEWAY_SCHEMA.append(
                pa.field("usage_date", pa.date32())))
            table = con.sql("SELECT * FROM read_parquet($f, hive_partitioning = false, union_by_name = true)",
                            params={"f": files + [schema_file]}).to_arrow_table()
        table = table.drop_columns(["utc_date"]) if "utc_date" in table.column_names else table
        utc = _utc_days(table["created_at"])
        ahead = pc.any(pc.greater(table["usage_date"], utc)).as_py() or False
        behind = pc.any(pc.less(table["usage_date"], utc)).as_py() or False
        table = table.drop_columns(["usage_date"]).append_column("utc_date", utc)
        table = table.select(GATEWAY_SCHEMA.names).cast(GATEWAY_SCHEMA)
        rows = table.num_rows
        for day in pc.unique(table["utc_date"]).to_pylist():
            part = table.filter(pc.equal(table["utc_date"], pa.scalar(day, pa.date32())))
            path = lake_datasets.GATEWAY_LOGS.path(lake_root, day)
            if path.exists():  # a conversion cut short: what it wrote counts once more, deduplicated
                part = pa.concat_tables([pq.read_table(path, partitioning=None).select(GATEWAY_SCHEMA.names)
                                         .cast(GATEWAY_SCHEMA), part])
            lake.write_table_atomic(dedupe_sorted(part)[0], path)
    for folder in old:
        shutil.rmtree(folder)
    return rows, ahead, behind


def _convert_gateway_pulls(lake_root: Path, ahead: bool, behind: bool) -> int:
    converted = 0
    for path in map(Path, lake_datasets.GATEWAY_PULLS.files(lake_root)):
        table = pq.read_table(path, partitioning=None)
        if "day_basis" in table.column_names:
            continue
        rows = table.to_pylist()
        for row in rows:
            # UTC days wholly inside the reporting days [first_day, last_day] of the old zone
            row["first_day"] = row["first_day"] + timedelta(days=1) if behind else row["first_day"]
            row["last_day"] = row["last_day"] - timedelta(days=1) if ahead else row["last_day"]
            row["day_basis"] = "utc"
        lake.write_table_atomic(pa.Table.from_pylist(rows, schema=gateway_lake.GATEWAY_PULLS), path)
        converted += 1
    return converted


def _convert_gateway_checks(lake_root: Path) -> None:
    for path in map(Path, lake_datasets.GATEWAY_CHECKS.files(lake_root)):
        table = pq.read_table(path, partitioning=None)
        if "usage_date" in table.column_names and "utc_date" not in table.column_names:
            table = table.rename_columns(["utc_date" if n == "usage_date" else n for n in table.column_names])
            lake.write_table_atomic(table.select(gateway_lake.GATEWAY_CHECKS.names).cast(gateway_lake.GATEWAY_CHECKS),
                                    path)


def _reassemble_request_logs(lake_root: Path) -> int:
    old = sorted((lake_root / lake_datasets.REQUEST_LOGS.name).glob("usage_date=*"))
    if not old:
        return 0
    for folder in old:
        shutil.rmtree(folder)
    days = [d for m in request_log_lake.read_manifests(lake_root)
            for d in (m.get("first_utc_date"), m.get("last_utc_date")) if d is not None]
    if not days:
        return 0
    first: date = min(days)
    last: date = max(days)
    return sum(request_log_lake.assemble(lake_root, first, last).values())
