"""The smoke test as a Dagster asset: one row in `smoke_tests` per run; the run fails if the test does."""

import dagster as dg

from pipelines.defs.resources import LedgerHome, QueryService
from pipelines.lib import smoke_test


class SmokeTestConfig(dg.Config):
    reviewer: str | None = None
    chat: bool = False


def build_smoke_test_assets(api_url: str) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["warehouse", "smoke_tests"],
        group_name="checks",
        kinds={"duckdb"},
        owners=["team:finance"],
        pool="duckdb_writer",
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
        return dg.MaterializeResult(metadata={"passed": True, "result": dg.MetadataValue.json(result.to_dict()),
                                              "warnings": "\n".join(result.warnings) or "none"})

    return [smoke_tests]
