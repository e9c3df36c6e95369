"""The warehouse's data dictionary in Markdown, from its own `COMMENT ON` text.

    python -m pipelines.lib.data_dictionary data/warehouse.duckdb > docs/data-dictionary.md
    python -m pipelines.lib.data_dictionary --json data/warehouse.duckdb > sql/warehouse_schema.json

The second form is the same in JSON: the column schema the Dagster asset definitions show for every
warehouse table before it has ever been built (`committed_schemas`).

Every table and view of the warehouse (DuckDB's internal catalog aside) with its comment, and each
column with its type, whether it may be NULL, and its comment. The output depends on the schema
alone, never on the rows, and is ordered by name, so the same schema always gives the same bytes.
The warehouse is opened read-only: it is safe while the pipeline runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb

TITLE = "# Data dictionary"
PREAMBLE = """\
The tables analysts query in `$COMET_LEDGER_HOME/warehouse.duckdb` (open it read-only), with the
comment each one carries in the warehouse. Generated, do not edit by hand:

```sh
.venv/bin/python -m pipelines.lib.data_dictionary data/warehouse.duckdb > docs/data-dictionary.md
```

(a warehouse where `comet-ledger smoke-test` has never run has no `smoke_tests` yet, and one that no
alert evaluation has found anything in has no `alerts` and `alert_deliveries`).
`tests/ui/test_data_dictionary.py` regenerates it from a simulated month that has run every model
and fails when this file differs (`COMET_LEDGER_UPDATE_DICTIONARY=1` makes that test rewrite it).
Money is USD; a reporting day is a calendar day in `COMET_LEDGER_TIMEZONE`, and a row whose day
was not over when it was built (today) has `is_partial_day` true: figures so far. Ready queries:
`docs/queries/`."""
NO_COMMENT = "(no comment)"


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    comment: str | None


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    kind: str  # table or view
    comment: str | None
    columns: tuple[Column, ...]

    @property
    def title(self) -> str:
        return self.name if self.schema == "main" else f"{self.schema}.{self.name}"


def read_tables(con: duckdb.DuckDBPyConnection) -> list[Table]:
    """Every non-internal table and view of the open database, with its columns, by name."""
    relations = con.execute("""
        SELECT schema_name, table_name, 'table', comment FROM duckdb_tables() WHERE NOT internal
        UNION ALL
        SELECT schema_name, view_name, 'view', comment FROM duckdb_views() WHERE NOT internal AND NOT temporary
        ORDER BY 2, 1""").fetchall()
    columns: dict[tuple[str, str], list[Column]] = {}
    for schema, table, name, data_type, nullable, comment in con.execute("""
            SELECT schema_name, table_name, column_name, data_type, is_nullable, comment
            FROM duckdb_columns() WHERE NOT internal ORDER BY schema_name, table_name, column_index""").fetchall():
        columns.setdefault((schema, table), []).append(Column(name, data_type, bool(nullable), comment))
    return [Table(schema, name, kind, comment, tuple(columns.get((schema, name), ())))
            for schema, name, kind, comment in relations]


def _cell(text: str | None) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join((text or NO_COMMENT).split()).replace("|", "\\|")


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower() if c.isalnum() or c in "-_")


def render(tables: list[Table]) -> str:
    lines = [TITLE, "", PREAMBLE, "", "| table | what it holds |", "|---|---|"]
    for table in tables:
        kind = "" if table.kind == "table" else " (view)"
        lines.append(f"| [`{table.title}`](#{_anchor(table.title)}){kind} | {_cell(table.comment)} |")
    for table in tables:
        lines += ["", f"## `{table.title}`", "", " ".join((table.comment or NO_COMMENT).split()), "",
                  "| column | type | NULL | meaning |", "|---|---|---|---|"]
        for column in table.columns:
            lines.append(f"| `{column.name}` | {column.data_type} | {'yes' if column.nullable else 'no'} "
                         f"| {_cell(column.comment)} |")
    return "\n".join(lines) + "\n"


SCHEMA_FILE = "warehouse_schema.json"  # in sql/, beside the models it describes


def render_json(tables: list[Table]) -> str:
    """Every table's comment and columns (name, type, nullable, comment) as JSON, by name."""
    return json.dumps({t.title: {"comment": t.comment, "columns": [
        {"name": c.name, "type": c.data_type, "nullable": c.nullable, "comment": c.comment} for c in t.columns]}
        for t in tables}, indent=1, ensure_ascii=False) + "\n"


@cache
def committed_schemas() -> dict[str, dict]:
    """sql/warehouse_schema.json: what `render_json` made of a warehouse built by every model."""
    from pipelines.lib.warehouse import sql_dir

    return json.loads((sql_dir() / SCHEMA_FILE).read_text(encoding="utf-8"))


def data_dictionary(warehouse_path: Path | str, as_json: bool = False) -> str:
    """The Markdown data dictionary of the warehouse at `warehouse_path` (opened read-only)."""
    path = Path(warehouse_path)
    if not path.is_file():
        raise FileNotFoundError(f"no warehouse at {path}: run `comet-ledger demo` or a backfill first")
    with duckdb.connect(str(path), read_only=True) as con:
        tables = read_tables(con)
    return render_json(tables) if as_json else render(tables)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = args[:1] == ["--json"]
    args = args[1:] if as_json else args
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m pipelines.lib.data_dictionary [--json] WAREHOUSE.duckdb > docs/data-dictionary.md",
              file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        text = data_dictionary(args[0], as_json=as_json)
    except (FileNotFoundError, duckdb.Error) as exc:
        print(f"data_dictionary: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
