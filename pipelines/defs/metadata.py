"""Materialisation metadata a person wants in the UI: counts, previews, column schemas."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import duckdb


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
