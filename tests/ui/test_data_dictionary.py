"""docs/data-dictionary.md (and sql/warehouse_schema.json) is what `python -m pipelines.lib.data_dictionary` makes of the warehouse of a
simulated month that has run every model: regenerated here and compared, so it never drifts from the
`COMMENT ON` text in sql/. `COMET_LEDGER_UPDATE_DICTIONARY=1` rewrites the committed file instead."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys

import duckdb

from conftest import table_rows
from pipelines.lib.data_dictionary import data_dictionary, read_tables, render
from ui.conftest import REPO

DICTIONARY = REPO / "docs" / "data-dictionary.md"
SCHEMAS = REPO / "sql" / "warehouse_schema.json"


def test_the_committed_dictionary_equals_a_fresh_one(sim_month):
    fresh = data_dictionary(sim_month.settings.warehouse_path)
    if os.environ.get("COMET_LEDGER_UPDATE_DICTIONARY") == "1":
        DICTIONARY.write_text(fresh)
    committed = DICTIONARY.read_text() if DICTIONARY.exists() else ""
    diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                             "docs/data-dictionary.md", "regenerated"))[:40])
    assert committed == fresh, ("docs/data-dictionary.md is out of date; rewrite it with "
                                "COMET_LEDGER_UPDATE_DICTIONARY=1 .venv/bin/pytest tests/ui/test_data_dictionary.py\n"
                                + diff)


def test_the_committed_column_schemas_equal_fresh_ones(sim_month):
    """sql/warehouse_schema.json, which the asset definitions show, is the same warehouse in JSON."""
    fresh = data_dictionary(sim_month.settings.warehouse_path, as_json=True)
    if os.environ.get("COMET_LEDGER_UPDATE_DICTIONARY") == "1":
        SCHEMAS.write_text(fresh)
    assert (SCHEMAS.read_text() if SCHEMAS.exists() else "") == fresh, (
        "sql/warehouse_schema.json is out of date; rewrite it with COMET_LEDGER_UPDATE_DICTIONARY=1 "
        ".venv/bin/pytest tests/ui/test_data_dictionary.py")
    columns = {c["name"]: c["type"] for c in json.loads(fresh)["recon_key_daily"]["columns"]}
    assert columns["adjustments_usd"] == "DECIMAL(18,6)" and columns["status"] == "VARCHAR"
    done = subprocess.run([sys.executable, "-m", "pipelines.lib.data_dictionary", "--json",
                           str(sim_month.settings.warehouse_path)], capture_output=True, text=True, timeout=60,
                          cwd=REPO, check=False)
    assert done.returncode == 0 and done.stdout == fresh


def test_the_command_line_prints_the_same(sim_month):
    done = subprocess.run([sys.executable, "-m", "pipelines.lib.data_dictionary",
                           str(sim_month.settings.warehouse_path)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data_dictionary(sim_month.settings.warehouse_path)
    missing = subprocess.run([sys.executable, "-m", "pipelines.lib.data_dictionary", "/nonexistent.duckdb"],
                             capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1 and "no warehouse" in missing.stderr


def test_every_public_table_and_column_is_in_the_dictionary(sim_month):
    text = DICTIONARY.read_text()
    titles = re.findall(r"^## `([^`]+)`$", text, flags=re.M)
    tables = [t for (t,) in table_rows(sim_month.settings, "SELECT table_name FROM duckdb_tables() "
                                                           "WHERE NOT internal UNION ALL SELECT view_name "
                                                           "FROM duckdb_views() WHERE NOT internal ORDER BY 1")]
    assert titles == tables
    for table, column, data_type in table_rows(sim_month.settings, """
            SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal"""):
        section = text[text.index(f"## `{table}`"):]
        section = section[:section.find("\n## ", 1) if "\n## " in section[1:] else None]
        assert f"| `{column}` | {data_type} |" in section, (table, column)
    # every table the README lists is documented, the smoke test's included
    readme = (REPO / "README.md").read_text()
    listing = readme[readme.index("## Warehouse tables"):].split("\n\n")[1]
    first_cells = re.findall(r"^\| ([^|]+) \|", listing, flags=re.M)
    listed = {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}
    assert listed and listed <= set(titles), listed - set(titles)
    assert "(no comment)" not in text


def test_views_pipes_and_missing_comments_render_on_one_line(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE t (a INTEGER NOT NULL, b VARCHAR)")
        con.execute("COMMENT ON TABLE t IS 'rows | with a pipe\nand a newline'")
        con.execute("COMMENT ON COLUMN t.a IS 'the a'")
        con.execute("CREATE VIEW v AS SELECT a FROM t")
        text = render(read_tables(con))
    assert "| [`t`](#t) | rows \\| with a pipe and a newline |" in text
    assert "| [`v`](#v) (view) | (no comment) |" in text
    assert "| `a` | INTEGER | no | the a |" in text and "| `b` | VARCHAR | yes | (no comment) |" in text
    assert text.index("## `t`") < text.index("## `v`") and text.endswith("|\n")
