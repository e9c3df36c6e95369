"""The README's ready queries, as the files in `docs/queries/`, run as written against a simulated
month: each returns rows with the columns it promises, finds what the simulator planted, and the
README shows exactly the same SQL."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest

from conftest import table_rows
from ui.conftest import REPO

QUERIES = REPO / "docs" / "queries"
README = REPO / "README.md"
SECTION = "## Query the warehouse"
COLUMNS = {
    "spend_by_team_this_month.sql": ["month", "team", "requests", "reported_usd", "estimated_usd", "billed_usd",
                                     "share_pct"],
    "top_models_by_cost.sql": ["model", "billing_category", "requests", "prompt_tokens", "completion_tokens",
                               "reported_usd", "estimated_usd", "share_pct"],
    "unexplained_variance.sql": ["usage_date", "key_name", "team", "status", "reported_cost_usd",
                                 "estimated_cost_usd", "billed_cost_usd", "variance_usd", "variance_pct",
                                 "explanation"],
    "unpriced_traffic.sql": ["model", "key_name", "pricing_status", "requests", "first_day", "last_day",
                             "prompt_tokens", "completion_tokens", "billed_usd"],
    "leaked_key_signals.sql": ["usage_date", "key_name", "kind", "severity", "amount_usd", "detail", "evidence",
                               "action"],
}


def run_file(settings, name: str) -> tuple[list[str], list[tuple]]:
    """The file's text, unchanged, on a read-only connection (as an analyst opens the warehouse)."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        relation = con.sql((QUERIES / name).read_text())
        return relation.columns, relation.fetchall()


def sql_body(name: str) -> str:
    """The query without its leading comment lines: what the README shows."""
    lines = (QUERIES / name).read_text().strip().splitlines()
    return "\n".join(line for line in lines if not line.startswith("--")).strip()


def readme_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README.md has no '{SECTION}' section"
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end > 0 else None]


def test_every_query_file_is_expected_and_in_the_readme_as_written():
    assert {p.name for p in QUERIES.glob("*.sql")} == set(COLUMNS)
    section = readme_section()
    for name in COLUMNS:
        assert f"docs/queries/{name}" in section, name
        assert f"```sql\n{sql_body(name)}\n```" in section, f"README's copy of {name} differs from the file"


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_each_query_runs_as_written_and_returns_rows(sim_month, name):
    columns, rows = run_file(sim_month.settings, name)
    assert columns == COLUMNS[name]
    assert rows, f"{name} returned no rows against the simulated month"


def test_spend_by_team_adds_up_to_what_cometapi_reported_this_month(sim_month):
    _, rows = run_file(sim_month.settings, "spend_by_team_this_month.sql")
    [(reported,)] = table_rows(sim_month.settings, "SELECT sum(reported_cost_usd) FROM quota_daily "
                                                   "WHERE date_trunc('month', usage_date) = DATE '2026-10-01'")
    assert {month.isoformat() for month, *_ in rows} == {"2026-10-01"}
    assert sum(row[3] for row in rows) == reported
    assert {row[1] for row in rows} == {"media", "team-a", "team-b"}
    assert sum(row[6] for row in rows) == pytest.approx(100, abs=0.05)
    assert [row[3] for row in rows] == sorted((row[3] for row in rows), reverse=True)


def test_top_models_add_up_to_the_bill_and_are_ranked(sim_month):
    _, rows = run_file(sim_month.settings, "top_models_by_cost.sql")
    [(reported,)] = table_rows(sim_month.settings, "SELECT sum(reported_cost_usd) FROM quota_daily")
    assert len(rows) <= 10
    assert [row[5] for row in rows] == sorted((row[5] for row in rows), reverse=True)
    if len(rows) < 10:  # every model listed: the allocation sums exactly to the report
        assert sum(row[5] for row in rows) == reported
    glm = [row for row in rows if row[0] == "glm-4.6"]
    assert glm and glm[0][6] is None  # unpriced: no estimate, never 0


def test_unexplained_variance_lists_exactly_the_flagged_key_days(sim_month):
    _, rows = run_file(sim_month.settings, "unexplained_variance.sql")
    flagged = table_rows(sim_month.settings, "SELECT usage_date, key_name FROM recon_key_daily "
                                             "WHERE status NOT IN ('matched', 'within_tolerance')")
    assert sorted((r[0], r[1]) for r in rows) == sorted(flagged)
    planted = sim_month.traffic.planted["missing_logs"]
    missing = [r for r in rows if (r[0], r[1]) == (planted["date"], planted["key"])]
    assert missing and "missing from your logs" in missing[0][9]
    assert all(r[9] for r in rows)  # every one explained in words


def test_unpriced_traffic_finds_the_model_missing_from_the_price_table(sim_month):
    _, rows = run_file(sim_month.settings, "unpriced_traffic.sql")
    planted = sim_month.traffic.planted["unpriced_model"]
    assert {(r[0], r[1], r[2]) for r in rows} == {("glm-4.6", planted["key"], "unpriced")}
    [(requests, billed)] = table_rows(sim_month.settings, "SELECT count(*), sum(billed_cost_usd) FROM requests "
                                                          "WHERE model = 'glm-4.6'")
    assert rows[0][3] == requests and rows[0][8] == billed and billed > Decimal(0)


def test_leaked_key_signals_point_at_the_unknown_address(sim_month):
    _, rows = run_file(sim_month.settings, "leaked_key_signals.sql")
    planted = sim_month.traffic.planted["missing_logs"]
    kinds = {r[2] for r in rows if (r[0], r[1]) == (planted["date"], planted["key"])}
    assert {"unlogged_gateway_requests", "new_source_ip"} <= kinds
    assert all("198.51.100.66" in r[6] for r in rows if r[2] != "spend_spike")
    assert rows[0][3] == "critical" and all(r[7] for r in rows)
