"""A small simulated month for the operator and analyst tests: backfilled over HTTP from the simulator,
re-pulled like the daily schedule does, smoke-tested, and its review pack built.

Ten days keep every planted reality of the simulator (short simulations clamp them into the window)
at a third of the cost of the 30-day month the reconciliation tests use. `tests/ui` is a package so
this file is imported as `ui.conftest` and `from conftest import ...` still means `tests/conftest.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import SIM_START, make_settings, materialize_days
from pipelines.lib.alerts.ledger import MODEL as ALERTS_MODEL
from pipelines.lib.cometapi.http import RetryPolicy
from pipelines.lib.review_pack import PackResult, build_pack
from pipelines.lib.settings import Settings
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import Traffic, generate_traffic
from pipelines.lib.smoke_test import record, run_smoke_test
from pipelines.lib.warehouse import publish, run_model

REPO = Path(__file__).resolve().parents[2]
UI_DAYS = 10
UI_LAST = SIM_START + timedelta(days=UI_DAYS - 1)
MONTH = f"{SIM_START:%Y-%m}"
BUILT_AT = datetime(2026, 11, 2, 6, 45, tzinfo=UTC)


@dataclass(frozen=True)
class SimMonth:
    settings: Settings
    traffic: Traffic
    pack: PackResult

    @property
    def html(self) -> Path:
        return self.pack.path / "reconciliation.html"


@pytest.fixture(scope="session")
def sim_month(tmp_path_factory) -> SimMonth:
    """Shared and read-only: the warehouse, lake and `reports/review-YYYY-MM/` of a 10-day month."""
    traffic = generate_traffic(seed=7, start=SIM_START, days=UI_DAYS)
    root = tmp_path_factory.mktemp("ui-month")
    prices = root / "sim-prices.csv"
    prices.write_text(prices_csv(SIM_START, UI_DAYS))
    with SimulatorServer(traffic) as sim:
        settings = make_settings(root / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices),
                                 COMET_LEDGER_KEY_OWNERS=str(REPO / "config" / "key_owners.csv"),
                                 # the operator's table alone: glm-4.6 stays the model it forgot
                                 COMET_LEDGER_PRICE_SOURCES="config")
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, SIM_START, UI_LAST)
        materialize_days(settings, UI_LAST - timedelta(days=3), UI_LAST)  # catches the planted restatement
        smoke = run_smoke_test(sim.url, sim.url, sim.api_key, known_active_range=None, reviewer=None,
                               today=UI_LAST + timedelta(days=1), policy=RetryPolicy(max_attempts=2, base_delay=0.0,
                                                                                     max_delay=0.0), timeout=5.0)
        assert smoke.passed, smoke.failures
        record(settings.warehouse_path, smoke)  # so `smoke_tests` exists, as after `comet-ledger smoke-test`
        # so `alerts` and `alert_deliveries` exist, as once an alert evaluation has found something
        with publish(settings.warehouse_path) as con:
            run_model(con, ALERTS_MODEL, {})
    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, MONTH, settings.reports,
                      timezone=settings.timezone, built_at=BUILT_AT)
    assert pack.has_data
    return SimMonth(settings, traffic, pack)
