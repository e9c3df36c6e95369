"""The gateway ledger under the simulator's faults: exactly the right rows, or one clear line and
nothing changed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import SIM_DAYS, SIM_START, lake_digest, materialize_days, warehouse_digest
from pipelines.simulator.inbox import write_inbox

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
FIRST = LAST - timedelta(days=5)  # a week is enough to see every row type (calls, refunds, corrections)
LEDGER_LAKE = ("gateway_logs", "gateway_pulls", "gateway_rejects")
FROM_THE_LEDGER = ("requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "cost_category_monthly",
                   "chargeback_monthly", "anomalies", "rejects", "inbox_files")


def downstream(settings) -> dict[str, str]:
    digest = warehouse_digest(settings)
    return {t: digest[t] for t in FROM_THE_LEDGER}


def ledger_rows(settings) -> list[tuple]:
    import duckdb

    files = sorted(str(p) for p in (settings.lake / "gateway_logs").glob("*/*.parquet"))
    with duckdb.connect() as con:
        return con.execute("SELECT request_id, log_type, created_at, quota_units, billed_usd FROM read_parquet($f) "
                           "ORDER BY ALL", {"f": files}).fetchall()


@pytest.fixture
def ledger_settings(tmp_path, sim, traffic):
    from conftest import make_settings
    from pipelines.simulator.catalog import prices_csv

    prices = tmp_path / "prices.csv"
    prices.write_text(prices_csv(SIM_START, SIM_DAYS))
    settings = make_settings(tmp_path / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                             COMET_LEDGER_PRICES=str(prices))
    write_inbox(traffic, settings.inbox)
    return settings


TRANSIENT = [
    ("rate_limit", {"times": 2, "retry_after": 0}),
    ("status", {"codes": [500, 502, 503, 504]}),
    ("reset", {"times": 2}),
    ("truncated_json", {"times": 1}),
    ("slow", {"times": 1, "delay": 1.5}),
]


@pytest.mark.parametrize("kind, opts", TRANSIENT, ids=[k for k, _ in TRANSIENT])
def test_transient_ledger_faults_end_in_exactly_the_right_rows(ledger_settings, sim, kind, opts):
    sim.mark_restated()  # the late correction is already visible: every pull sees the same ledger
    materialize_days(ledger_settings, FIRST, LAST)
    clean = ledger_rows(ledger_settings)
    sim.faults.add(kind, paths=["/api/log/self"], **opts)
    assert materialize_days(ledger_settings, FIRST, LAST, timeout_s=1.0).success
    assert ledger_rows(ledger_settings) == clean and len(clean) > 100


LASTING = [
    ("maintenance", {}, "gave up after 5 attempts"),
    ("html_redirect", {}, "301"),
    ("error_body_200", {}, "HTTP 200 with an error body"),
    ("renamed_field", {"from_": "items", "to": "records"}, "items"),
]


@pytest.mark.parametrize("kind, opts, words", LASTING, ids=[k for k, _, _ in LASTING])
def test_lasting_ledger_faults_fail_in_one_line_and_change_nothing(ledger_settings, sim, kind, opts, words):
    materialize_days(ledger_settings, FIRST, LAST)
    before = (lake_digest(ledger_settings, LEDGER_LAKE), downstream(ledger_settings))
    sim.faults.add(kind, times=None, paths=["/api/log/self"], **opts)
    result = materialize_days(ledger_settings, FIRST, LAST, raise_on_error=False)
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["lake__gateway_logs"]
    message = failures[0].event_specific_data.error.cause.message if failures[0].event_specific_data.error.cause \
        else failures[0].event_specific_data.error.message
    first_line = message.strip().splitlines()[0]
    assert words in first_line
    # the ledger's lake and every table built from it are exactly as before (those steps did not run);
    # the query service's own assets, independent of the ledger, still ran
    assert (lake_digest(ledger_settings, LEDGER_LAKE), downstream(ledger_settings)) == before
