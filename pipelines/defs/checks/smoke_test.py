"""The smoke test as a Dagster asset: one row in `smoke_tests` per run, recorded as a materialisation
whether it passed or not (`passed` in its metadata); the run fails if the test does."""

from pathlib import Path

import dagster as dg

from pipelines.defs.metadata import preview, table_metadata, warehouse_spec_metadata
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.resources import LedgerHome, QueryService
from pipelines.lib import clock, smoke_test
from pipelines.lib.warehouse import connect_readonly


class SmokeTestConfig(dg.Config):
    reviewer: str | None = None
    chat: bool = False


def build_smoke_test_assets(api_url: str) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["warehouse", "smoke_tests"],
        group_name="checks",
        kinds={"duckdb"},
        owners=["team:finance"],
        pool=WRITER_POOL,
        metadata=warehouse_spec_metadata("smoke_tests"),
        description=(
            "The pre-review smoke test: totals present, a known-active range returns daily_quota, a malformed "
            "date is refused, an empty range is empty, and the query key's own identity. Appends one row; the "
            "run fails when the test does. It never asserts token counts, USD figures, uptime or latency."
        ),
    )
    def smoke_tests(context: dg.AssetExecutionContext, config: SmokeTestConfig, ledger: LedgerHome,
                    query_service: QueryService) -> dg.MaterializeResult:
        result = smoke_test.run_smoke_test(
            query_service.base_url, api_url, query_service.api_key,
            known_active_range=None, reviewer=config.reviewer, chat=config.chat,
            today=clock.today(ledger.timezone),
        )
        smoke_test.record(ledger.warehouse_path, result)
        for warning in result.warnings:
            context.log.warning(warning)
        metadata = smoke_tests_metadata(ledger.warehouse_path, result)
        if not result.passed:  # the row is in the table, the run still fails
            context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, metadata=metadata))
            raise dg.Failure(description="smoke test failed: " + "; ".join(result.failures),
                             metadata={"failures": "\n".join(result.failures)})
        return dg.MaterializeResult(metadata=metadata)

    return [smoke_tests]


def smoke_tests_metadata(warehouse_path: Path, result: smoke_test.SmokeTestResult) -> dict[str, object]:
    """What a materialisation of `smoke_tests` shows once `result` is recorded, whoever ran the test
    (this asset or `comet-ledger smoke-test`)."""
    with connect_readonly(warehouse_path) as con:
        table = {
            **table_metadata(con, "smoke_tests"),
            "preview": preview(con, "previews/smoke_tests"),
        }
    return {**table, "passed": result.passed, "result": dg.MetadataValue.json(result.to_dict()),
            "failures": "\n".join(result.failures) or "none", "warnings": "\n".join(result.warnings) or "none"}
