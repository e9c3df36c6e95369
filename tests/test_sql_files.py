"""Every SQL file states its grain in its header comment, and the read-only queries in sql/reports/
that the code runs by name (`warehouse.run_query`) are there, one statement each, and all used."""

import re
from pathlib import Path

import duckdb
import pytest

from pipelines.lib.warehouse import query_path

REPO = Path(__file__).resolve().parents[1]
SQL = REPO / "sql"
QUERY_FOLDERS = ("pack", "cli", "previews")
# A query name as the code spells it: "pack/totals", "previews/quota_daily", ...
QUERY_NAME = re.compile(r"""["'](?:%s)/[a-z][a-z0-9_]*["']""" % "|".join(QUERY_FOLDERS))


def header(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines[:next((i for i, line in enumerate(lines) if not line.startswith("--")),
                                                    len(lines))])


def test_every_sql_file_states_its_grain_in_its_header():
    files = sorted(SQL.rglob("*.sql"))
    assert len(files) > 60  # models, macros, reports and the queries moved out of Python
    missing = [str(p.relative_to(REPO)) for p in files if "Grain:" not in header(p)]
    assert missing == []


def test_the_queries_the_code_names_exist_and_every_query_is_named():
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "pipelines").rglob("*.py"))
    named = {m.group(0)[1:-1] for m in QUERY_NAME.finditer(code)}
    # warehouse/assets.py names its table previews by table: f"previews/{name}"
    named |= {f"previews/{t}" for t in ("requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily",
                                        "cost_category_monthly", "chargeback_monthly")}
    present = {f"{p.parent.name}/{p.stem}" for folder in QUERY_FOLDERS for p in (SQL / "reports" / folder).glob("*.sql")}
    assert sorted(named - present) == []  # named in code, no file
    assert sorted(present - named) == []  # a file nothing runs
    assert len(present) >= 50


def test_each_query_is_one_read_only_statement_with_bound_parameters():
    with duckdb.connect() as con:
        for folder in QUERY_FOLDERS:
            for path in sorted((SQL / "reports" / folder).glob("*.sql")):
                [statement] = con.extract_statements(path.read_text(encoding="utf-8"))
                assert statement.type == duckdb.StatementType.SELECT, path.name
                declared = set(re.findall(r"\$([a-z_]+)", header(path)))
                assert statement.named_parameters <= declared, f"{path.name}: parameters not in its header"


def test_a_query_name_cannot_leave_sql_reports():
    for name in ("../core/requests", "pack/../../x", "Pack/totals", "pack/totals.sql"):
        with pytest.raises(ValueError, match="not a query name"):
            query_path(name)
    with pytest.raises(FileNotFoundError, match="no query sql/reports/pack/nothing.sql"):
        query_path("pack/nothing")
