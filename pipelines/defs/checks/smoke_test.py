"""The smoke test as a Dagster asset: one row in `smoke_tests` per run; the run fails if the test does."""

import dagster as dg

from pipelines.defs.metadata import column_schema, preview
from pipelines.defs.pools import WRITER_POOL
from pipelines.defs.resources import LedgerHome, QueryService
from pipelines.lib import smoke_test
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
            today=smoke_test.today_in(ledger.timezone),
        )
        smoke_test.record(ledger.warehouse_path, result)
        for warning in result.warnings:
            context.log.warning(warning)
        if not result.passed:
            raise dg.Failure(description="smoke test failed: " + "; ".join(result.failures),
                             metadata={"failures": "\n".join(result.failures)})
        with connect_readonly(ledger.warehouse_path) as con:
            table = {
                "dagster/row_count": con.execute("SELECT count(*) FROM smoke_tests").fetchone()[0],
                "dagster/column_schema": column_schema(con, "smoke_tests"),
                "preview": preview(con, "SELECT checked_at, smoke_test_date, query_key_name, query_date_range, "
                                        "passed, reviewer FROM smoke_tests ORDER BY checked_at DESC LIMIT 10"),
            }
        return dg.MaterializeResult(metadata={**table, "passed": True,
                                              "result": dg.MetadataValue.json(result.to_dict()),
                                              "warnings": "\n".join(result.warnings) or "none"})

    return [smoke_tests]
