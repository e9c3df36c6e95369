"""Every asset's materialisation tells a person what it holds: row count, column schema, a preview.

The simulated days end yesterday by the product's clock (pinned for the suite in conftest.py): the
smoke test asset checks the 7 days before today for activity, and the review pack is built for
yesterday's month.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines.definitions import build_definitions
from pipelines.defs.resources import GatewayLedger, QueryService
from pipelines.lib import clock
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REQUIRED = ("dagster/row_count", "dagster/column_schema", "preview")


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    """Every asset of the definitions materialised: two days end to end, then the last day again (the
    metadata kept is the last materialisation's), the smoke test, the pack."""
    last = clock.yesterday("UTC")
    first = last - timedelta(days=1)
    traffic = generate_traffic(seed=11, start=first, days=2, requests_per_day=12)
    home = tmp_path_factory.mktemp("metadata") / "home"
    with SimulatorServer(traffic) as sim:
        settings = make_settings(home, sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_START_DATE=(first - timedelta(days=40)).isoformat())
        write_inbox(traffic, settings.inbox)
        instance = dg.DagsterInstance.ephemeral()
        runs = [materialize_days(settings, first, last, instance=instance),
                materialize_days(settings, last, last, instance=instance)]
        fast = {"base_delay_s": 0.01, "timeout_s": 5.0}
        defs = build_definitions(settings, resources={
            "query_service": QueryService(base_url=settings.query_url, api_key=settings.api_key, **fast),
            "gateway": GatewayLedger(base_url=settings.api_url, access_token=settings.access_token, **fast)})
        runs.append(defs.resolve_job_def("smoke_test").execute_in_process(instance=instance))
        runs.append(defs.resolve_job_def("monthly_review").execute_in_process(
            instance=instance, partition_key=last.replace(day=1).isoformat()))
    events = [e for run in runs for e in run.get_asset_materialization_events()]
    checks = {e.check_name: e for e in runs[0].get_asset_check_evaluations()}
    return settings, defs, first, last, {e.asset_key.to_user_string(): e.materialization.metadata for e in events}, checks


def test_every_asset_reports_a_row_count_a_column_schema_and_a_preview(materialised):
    _, defs, _, _, metadata, _ = materialised
    assert set(metadata) == {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    for key, meta in metadata.items():
        assert all(name in meta for name in REQUIRED), (key, sorted(meta))
        assert isinstance(meta["dagster/row_count"].value, int) and meta["dagster/row_count"].value >= 0, key
        schema = meta["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema) and schema.columns, key
        assert all(c.name and c.type for c in schema.columns), key
        assert meta["preview"].value.startswith("| "), key


def test_money_in_every_metadata_table_has_six_decimals(materialised):
    """DECIMAL and DOUBLE alike: no `9e-06`, no 0.1 beside 0.100000."""
    _, _, _, _, metadata, _ = materialised
    checked = 0
    for key, meta in metadata.items():
        for name, value in meta.items():
            text = value.value if isinstance(value, dg.MarkdownMetadataValue) else None
            if not text or not text.startswith("| "):
                continue
            lines = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
            header, rows = [c.strip() for c in lines[0]], lines[1:]
            for row in rows:
                for column, cell in zip(header, (c.strip() for c in row)):
                    if column.endswith("_usd") and cell:
                        checked += 1
                        assert re.fullmatch(r"-?\d+\.\d{6}", cell), (key, name, column, cell)
    assert checked > 50


def test_row_counts_say_what_the_table_holds_and_what_the_run_covered(materialised):
    """`dagster/row_count` is what the table (or lake dataset) holds; `rows_in_window` the rows of the
    run's days, `rows_written` what the run wrote. The last run covered the last of the two days."""
    settings, _, first, last, metadata, _ = materialised

    def value(key: str, name: str) -> int:
        return metadata[key][name].value

    for table in ("quota_daily", "recon_key_daily", "requests", "cost_model_daily"):
        [(held, in_window)] = table_rows(settings, f"SELECT count(*), count(*) FILTER (WHERE usage_date = $last) "
                                                   f"FROM {table}", {"last": last})
        key = f"warehouse/{table}"
        assert (value(key, "dagster/row_count"), value(key, "rows_in_window")) == (held, in_window), table
        assert held > in_window > 0, table
        assert metadata[key]["window"].value == f"{last} .. {last}"

    def lake_rows(dataset: str, where: str = "true") -> int:
        with duckdb.connect() as con:
            return con.execute(f"SELECT count(*) FROM read_parquet($f, hive_partitioning = false) WHERE {where}",
                               {"f": str(settings.lake / dataset / "*" / "*.parquet")}).fetchone()[0]

    # two pulls and two snapshots: the lake keeps both; the last run wrote the second
    with duckdb.connect() as con:
        [(second_pull,)] = con.execute("SELECT max(pull_id) FROM read_parquet($f, hive_partitioning = false)",
                                       {"f": str(settings.lake / "quota_daily" / "*" / "*.parquet")}).fetchall()
    assert value("lake/quota_daily", "dagster/row_count") == lake_rows("quota_daily")
    assert value("lake/quota_daily", "rows_written") == lake_rows("quota_daily", f"pull_id = '{second_pull}'")
    assert lake_rows("quota_daily") > value("lake/quota_daily", "rows_written") > 0
    assert value("lake/key_snapshots", "dagster/row_count") == lake_rows("key_snapshots") == 2 * value(
        "lake/key_snapshots", "rows_written") > 0
    assert value("lake/request_logs", "dagster/row_count") == lake_rows("request_logs")
    assert value("lake/request_logs", "rows_written") == lake_rows("request_logs", f"utc_date = DATE '{last}'") > 0
    assert value("lake/gateway_logs", "dagster/row_count") == lake_rows("gateway_logs") > value(
        "lake/gateway_logs", "rows_written") > 0
    assert value("lake/inbox_files", "dagster/row_count") == lake_rows("inbox_manifest") > 0
    assert value("warehouse/smoke_tests", "dagster/row_count") == 1
    month = last.strftime("%Y-%m")
    export = Path(metadata["reports/review_pack"]["path"].value) / f"quota_daily_{month}.parquet"
    with duckdb.connect() as con:
        [(exported,)] = con.execute("SELECT count(*) FROM read_parquet($f)", {"f": str(export)}).fetchall()
    assert value("reports/review_pack", "dagster/row_count") == exported > 0


def test_lake_schemas_come_from_the_parquet_files(materialised):
    _, _, _, _, metadata, _ = materialised
    columns = {c.name: c.type for c in metadata["lake/quota_daily"]["dagster/column_schema"].value.columns}
    assert columns == {"usage_date": "DATE", "key_name": "VARCHAR", "cost_usd": "DECIMAL(18,6)",
                       "requests": "BIGINT", "pull_id": "VARCHAR", "pulled_at": "TIMESTAMP WITH TIME ZONE"}
    preview = metadata["lake/request_logs"]["preview"].value
    assert preview.splitlines()[0].startswith("| utc_date | ts | key_name | model |")


def test_the_definitions_carry_each_tables_columns_name_and_code(materialised):
    """Before anything is materialised the UI shows, from the definitions alone, each asset's column
    schema (the same as its materialisations report), a warehouse table's name, and the code: the
    Python function and the SQL models that build it."""
    _, defs, _, _, metadata, _ = materialised
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        name, defined = key.to_user_string(), graph.get(key).metadata
        schema = defined["dagster/column_schema"]
        materialised_schema = metadata[name]["dagster/column_schema"].value
        assert [(c.name, c.type) for c in schema.columns] == [(c.name, c.type) for c in materialised_schema.columns], name
        files = [r.file_path for r in defined["dagster/code_references"].code_references]
        assert any("/pipelines/defs/" in f and f.endswith(".py") for f in files), (name, files)  # the function that materialises it
        if key.path[0] == "warehouse":
            assert defined["dagster/table_name"] == metadata[name]["dagster/table_name"].value == f"warehouse.main.{key.path[1]}"
            assert any(f.endswith(f"/{key.path[1]}.sql") for f in files), (name, files)
            assert all(c.description for c in schema.columns), name  # the COMMENT of every column
    recon = graph.get(dg.AssetKey(["warehouse", "recon_key_daily"])).metadata["dagster/code_references"]
    assert {Path(r.file_path).name for r in recon.code_references} == {
        "stg_gateway_rows.sql", "stg_gateway_coverage.sql", "recon_key_daily.sql", "service_day_boundary.sql",
        "assets.py"}


def test_the_variance_check_names_the_key_days_it_flags(materialised):
    settings, _, first, last, _, checks = materialised
    flagged = table_rows(settings, "SELECT usage_date, key_name, status FROM recon_key_daily WHERE usage_date "
                                   "BETWEEN $first AND $last AND status NOT IN ('matched', 'within_tolerance') "
                                   "ORDER BY ALL", {"first": first, "last": last})
    check = checks["variance_within_tolerance"]
    assert flagged and not check.passed  # the shipped prices are not the simulator's: key-days are flagged
    assert check.metadata["flagged_key_days"].value == len(flagged)
    table = check.metadata["flagged"].value
    for day, key, status in flagged:
        assert f"| {day} | {key} | {status} |" in table
        assert f"{day} {key} {status}" in check.description
