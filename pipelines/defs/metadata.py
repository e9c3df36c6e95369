"""Metadata a person wants in the UI: counts, previews, column schemas, table names, code references.

Two kinds. On an asset's definition (shown before it was ever materialised): its column schema,
its table name, and the SQL models that build it (`warehouse_spec_metadata`, `lake_spec_metadata`),
whose text is its code version (`code_version`).
On a materialisation: what the data holds now. A run covers a window of days, and a table holds
more than the window, so each count says which it is: `dagster/row_count` is what the table or the
lake dataset holds after the run; `rows_in_window` (warehouse) the rows of the run's days, and
`rows_written` (lake) what the run itself wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa

from pipelines.lib.review_pack.document import usd


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 20) -> str:
    """A Markdown table of the first `limit` rows; money (a column named `*_usd`) with 6 decimals, as
    in the review pack, whether the warehouse holds it as DECIMAL or DOUBLE."""
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join(_cell(c, v) for c, v in zip(columns, row)) + " |\n" for row in rows[:limit])
    more = f"\n({len(rows) - limit} more rows)" if len(rows) > limit else ""
    return head + body + more


def _cell(column: str, value: object) -> str:
    if value is None:
        return ""
    if column.endswith("_usd") and isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return usd(value)
    return str(value)


def preview(con: duckdb.DuckDBPyConnection, query: str, params: dict | None = None) -> dg.MarkdownMetadataValue:
    """`sql/reports/<query>.sql` (the previews are in sql/reports/previews/) as a markdown table."""
    from pipelines.lib.warehouse import run_query

    result = run_query(con, query, params)
    columns = [d[0] for d in result.description]
    return dg.MetadataValue.md(markdown_table(columns, result.fetchall()))


WAREHOUSE_DATABASE = "warehouse"  # warehouse.duckdb, as DuckDB names the attached file


def table_name(table: str) -> str:
    """`dagster/table_name` of a warehouse table: database.schema.table, as an analyst queries it."""
    return f"{WAREHOUSE_DATABASE}.main.{table}"


def warehouse_spec_metadata(table: str, *models: str) -> dict[str, object]:
    """Definition metadata of a warehouse table: its name, its columns with their comments (from
    sql/warehouse_schema.json, so it shows before the table is ever built) and the SQL models that
    build it (default: the model of the same name)."""
    from pipelines.lib.data_dictionary import committed_schemas
    from pipelines.lib.warehouse import model_path, sql_dir

    columns = committed_schemas()[table]["columns"]
    references = [dg.LocalFileCodeReference(file_path=str(path), line_number=1,
                                            label=str(path.relative_to(sql_dir().parent)))
                  for path in (model_path(m) for m in models or (table,))]
    return {
        "dagster/table_name": table_name(table),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(c["name"], c["type"], description=c["comment"]) for c in columns]),
        "dagster/code_references": dg.CodeReferencesMetadataValue(code_references=references),
    }


def code_version(*models: str) -> str:
    """An asset's Dagster code version: the digest of the SQL models that build it, so that a changed
    model shows the asset as changed in the UI."""
    from pipelines.lib.warehouse import model_path

    digest = hashlib.sha256()
    for name in models:
        digest.update(model_path(name).read_bytes())
    return digest.hexdigest()[:12]


def lake_spec_metadata(schema: pa.Schema) -> dict[str, object]:
    """Definition metadata of a lake dataset: its column schema (the dataset's own Arrow schema, in
    the type names DuckDB reads it with)."""
    with duckdb.connect() as con:
        con.register("no_files", schema.empty_table())
        described = con.execute("DESCRIBE SELECT * FROM no_files").fetchall()
    return {"dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(name, dtype)
                                                             for name, dtype, *_ in described])}


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, window: dict | None = None) -> dict[str, object]:
    """Materialisation counts of a warehouse table: all its rows, and (given the run's window
    {start, end}) the rows of the window's days; its name and columns."""
    meta: dict[str, object] = {
        "dagster/row_count": con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0],
        "dagster/table_name": table_name(table),
        "dagster/column_schema": column_schema(con, table),
    }
    if window is not None:
        meta["rows_in_window"] = con.execute(f'SELECT count(*) FROM "{table}" WHERE usage_date BETWEEN $start AND $end',
                                             window).fetchone()[0]
    return meta


def column_schema(con: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    rows = con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = $t ORDER BY column_index",
        {"t": table},
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype, description=comment) for name, dtype, comment in rows])


def lake_metadata(files: Sequence[str | Path], schema: pa.Schema, columns: Sequence[str] | None = None,
                  limit: int = 10, *, dataset: Sequence[str | Path] | None = None) -> dict[str, object]:
    """Rows written, column schema and a preview (first `limit` rows, `columns` or all) of the Parquet
    files one materialisation wrote, read from the files themselves; `dagster/row_count` is the rows
    of every file of the `dataset` (its footers only), or of `files` when no dataset is given.
    `schema`, the dataset's own, stands in when it wrote none."""
    files = [str(f) for f in files]
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        if files:
            described = con.execute("DESCRIBE SELECT * FROM read_parquet($files, hive_partitioning = false, "
                                    "union_by_name = true)", {"files": files}).fetchall()
            [(rows,)] = con.execute("SELECT count(*) FROM read_parquet($files, hive_partitioning = false, "
                                    "union_by_name = true)", {"files": files}).fetchall()
            sample = con.execute("SELECT * FROM read_parquet($files, hive_partitioning = false, union_by_name = true) "
                                 "LIMIT $limit", {"files": files, "limit": limit})
        else:
            con.register("no_files", schema.empty_table())
            described = con.execute("DESCRIBE SELECT * FROM no_files").fetchall()
            rows, sample = 0, con.execute("SELECT * FROM no_files")
        names = [d[0] for d in sample.description]
        data = sample.fetchall()
        if dataset:
            [(held,)] = con.execute("SELECT coalesce(sum(num_rows), 0)::BIGINT FROM parquet_file_metadata($files)",
                                    {"files": [str(f) for f in dataset]}).fetchall()
        else:
            held = rows
    keep = [names.index(c) for c in columns] if columns else list(range(len(names)))
    return {
        "dagster/row_count": held,
        "rows_written": rows,
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(name, dtype) for name, dtype, *_ in described]),
        "preview": dg.MetadataValue.md(markdown_table([names[i] for i in keep], [[r[i] for i in keep] for r in data])),
    }
