"""Every asset's materialisation tells a person what it holds: row count, column schema, a preview.

The simulated days end yesterday (today's clock, not the fixed simulated month of the other tests):
the smoke test asset checks the 7 days before today for activity, and the review pack is built for
yesterday's month.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines.definitions import build_definitions
from pipelines.defs.resources import GatewayLedger, QueryService
from pipelines.lib.simulator.inbox import write_inbox
from pipelines.lib.simulator.server import SimulatorServer
from pipelines.lib.simulator.traffic import generate_traffic

REQUIRED = ("dagster/row_count", "dagster/column_schema", "preview")


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    """Every asset of the definitions materialised once: two days end to end, the smoke test, the pack."""
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=1)
    traffic = generate_traffic(seed=11, start=first, days=2, requests_per_day=12)
    home = tmp_path_factory.mktemp("metadata") / "home"
    with SimulatorServer(traffic) as sim:
        settings = make_settings(home, sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_START_DATE=(first - timedelta(days=40)).isoformat())
        write_inbox(traffic, settings.inbox)
        instance = dg.DagsterInstance.ephemeral()
        runs = [materialize_days(settings, first, last, instance=instance)]
        fast = {"base_delay_s": 0.01, "timeout_s": 5.0}
        defs = build_definitions(settings, resources={
            "query_service": QueryService(base_url=settings.query_url, api_key=settings.api_key, **fast),
            "gateway": GatewayLedger(base_url=settings.api_url, access_token=settings.access_token, **fast)})
        runs.append(defs.resolve_job_def("smoke_test").execute_in_process(instance=instance))
        runs.append(defs.resolve_job_def("monthly_review").execute_in_process(
            instance=instance, partition_key=last.replace(day=1).isoformat()))
    events = [e for run in runs for e in run.get_asset_materialization_events()]
    return settings, defs, first, last, {e.asset_key.to_user_string(): e.materialization.metadata for e in events}


def test_every_asset_reports_a_row_count_a_column_schema_and_a_preview(materialised):
    _, defs, _, _, metadata = materialised
    assert set(metadata) == {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    for key, meta in metadata.items():
        assert all(name in meta for name in REQUIRED), (key, sorted(meta))
        assert isinstance(meta["dagster/row_count"].value, int) and meta["dagster/row_count"].value >= 0, key
        schema = meta["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema) and schema.columns, key
        assert all(c.name and c.type for c in schema.columns), key
        assert meta["preview"].value.startswith("| "), key


def test_row_counts_are_the_rows_written(materialised):
    settings, _, first, last, metadata = materialised
    window = {"first": first, "last": last}

    def rows_of(key: str) -> int:
        return metadata[key]["dagster/row_count"].value

    def lake_rows(dataset: str) -> int:
        with duckdb.connect() as con:
            return con.execute("SELECT count(*) FROM read_parquet($f, hive_partitioning = false)",
                               {"f": str(settings.lake / dataset / "*" / "*.parquet")}).fetchone()[0]

    # One pull and one snapshot happened: everything in these lake datasets was written by that run.
    assert rows_of("lake/quota_daily") == lake_rows("quota_daily") > 0
    assert rows_of("lake/key_snapshots") == lake_rows("key_snapshots") > 0
    assert rows_of("lake/request_logs") == lake_rows("request_logs") > 0
    assert rows_of("lake/gateway_logs") == lake_rows("gateway_logs") > 0
    assert rows_of("lake/inbox_files") == lake_rows("inbox_manifest") > 0
    [(quota_daily,)] = table_rows(settings, "SELECT count(*) FROM quota_daily "
                                            "WHERE usage_date BETWEEN $first AND $last", window)
    assert rows_of("warehouse/quota_daily") == quota_daily > 0
    [(requests,)] = table_rows(settings, "SELECT count(*) FROM requests WHERE usage_date BETWEEN $first AND $last",
                               window)
    assert rows_of("warehouse/requests") == requests > 0
    assert rows_of("warehouse/smoke_tests") == table_rows(settings, "SELECT count(*) FROM smoke_tests")[0][0] == 1
    month = last.strftime("%Y-%m")
    export = Path(metadata["reports/review_pack"]["path"].value) / f"quota_daily_{month}.parquet"
    with duckdb.connect() as con:
        [(exported,)] = con.execute("SELECT count(*) FROM read_parquet($f)", {"f": str(export)}).fetchall()
    assert rows_of("reports/review_pack") == exported > 0


def test_lake_schemas_come_from_the_parquet_files(materialised):
    _, _, _, _, metadata = materialised
    columns = {c.name: c.type for c in metadata["lake/quota_daily"]["dagster/column_schema"].value.columns}
    assert columns == {"usage_date": "DATE", "key_name": "VARCHAR", "cost_usd": "DECIMAL(18,6)",
                       "requests": "BIGINT", "pull_id": "VARCHAR", "pulled_at": "TIMESTAMP WITH TIME ZONE"}
    preview = metadata["lake/request_logs"]["preview"].value
    assert preview.splitlines()[0].startswith("| usage_date | ts | key_name | model |")
