"""Materialisation metadata a person wants in the UI: counts, previews, column schemas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 20) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |\n" for row in rows[:limit])
    more = f"\n({len(rows) - limit} more rows)" if len(rows) > limit else ""
    return head + body + more


def preview(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> dg.MarkdownMetadataValue:
    result = con.execute(sql, params or {})
    columns = [d[0] for d in result.description]
    return dg.MetadataValue.md(markdown_table(columns, result.fetchall()))


def column_schema(con: duckdb.DuckDBPyConnection, table: str) -> dg.TableSchema:
    rows = con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = $t ORDER BY column_index",
        {"t": table},
    ).fetchall()
    return dg.TableSchema(columns=[dg.TableColumn(name, dtype, description=comment) for name, dtype, comment in rows])


def lake_metadata(files: Sequence[str | Path], schema: pa.Schema, columns: Sequence[str] | None = None,
                  limit: int = 10) -> dict[str, object]:
    """Row count, column schema and a preview (first `limit` rows, `columns` or all) of the Parquet
    files one materialisation wrote, read from the files themselves. `schema`, the dataset's own,
    stands in when it wrote none."""
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
    keep = [names.index(c) for c in columns] if columns else list(range(len(names)))
    return {
        "dagster/row_count": rows,
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(name, dtype) for name, dtype, *_ in described]),
        "preview": dg.MetadataValue.md(markdown_table([names[i] for i in keep], [[r[i] for i in keep] for r in data])),
    }
