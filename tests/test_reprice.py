"""Re-pricing: a dry run shows the change per month and model and writes nothing; applying it
recomputes history to exactly the figures the dry run showed."""

from __future__ import annotations

import json
from datetime import date, timedelta

from conftest import make_settings, materialize_days, table_rows, warehouse_digest
from pipelines.cli import main
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

START, DAYS = date(2026, 10, 20), 14  # spans two months, and ends yesterday by the suite's clock (conftest.py)


def test_dry_run_then_apply(tmp_path, monkeypatch, capsys):
    traffic = generate_traffic(seed=11, start=START, days=DAYS, requests_per_day=20)
    prices = tmp_path / "prices.csv"
    prices.write_text(prices_csv(START, DAYS))
    with SimulatorServer(traffic) as sim:
        env = {"COMETAPI_ACCESS_TOKEN": sim.access_token, "COMET_LEDGER_PRICES": str(prices),
               "COMET_LEDGER_KEY_OWNERS": str(tmp_path / "owners.csv")}
        (tmp_path / "owners.csv").write_text("key_name,team,project,cost_center,effective_from,effective_to\n")
        settings = make_settings(tmp_path / "home", sim, **env)
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, START, START + timedelta(days=DAYS - 1))
    before = warehouse_digest(settings)
    old = dict(table_rows(settings, "SELECT date_trunc('month', usage_date)::DATE::VARCHAR || ' ' || model, "
                                    "sum(estimated_cost_usd) FROM requests WHERE model = 'gpt-4o' GROUP BY ALL"))

    # gpt-4o's input price goes from 2.5 to 3.0 USD per 1M tokens
    prices.write_text(prices.read_text().replace("gpt-4o,token,2.5,", "gpt-4o,token,3.0,"))
    for name, value in {"COMET_LEDGER_HOME": str(settings.home), "DAGSTER_HOME": str(tmp_path / "dagster"),
                        "COMETAPI_KEY": "sk-not-used-000000", **env}.items():
        monkeypatch.setenv(name, value)
    assert main(["reprice", "--dry-run", "--json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert warehouse_digest(settings) == before  # nothing written
    assert {c["model"] for c in changes} <= {"gpt-4o", "gpt-4o-2024-08-06"}
    assert {c["month"] for c in changes} == {"2026-10-01", "2026-11-01"}
    assert all(c["delta_usd"] > 0 for c in changes)

    assert main(["reprice"]) == 0
    capsys.readouterr()
    new = dict(table_rows(settings, "SELECT date_trunc('month', usage_date)::DATE::VARCHAR || ' ' || model, "
                                    "sum(estimated_cost_usd) FROM requests WHERE model = 'gpt-4o' GROUP BY ALL"))
    for change in (c for c in changes if c["model"] == "gpt-4o"):
        key = f"{change['month']} gpt-4o"
        assert abs(new[key] - old[key] - change["delta_usd"]) < 1e-9
    versions = table_rows(settings, "SELECT DISTINCT price_version_id FROM requests WHERE model = 'gpt-4o'")
    assert len(versions) == 1 and versions[0][0].startswith("gpt-4o@")
    # re-running the same re-pricing changes nothing more
    assert main(["reprice", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []

    # a change of price source, shown and not applied: the ledger alone undoes the edited gpt-4o row,
    # the operator's file alone leaves glm-4.6 (only the ledger prices it) unpriced
    assert main(["reprice", "--dry-run", "--json", "--sources", "catalog,ledger"]) == 0
    ledger_only = json.loads(capsys.readouterr().out)
    assert {c["model"] for c in ledger_only} == {"gpt-4o"} and all(c["delta_usd"] < 0 for c in ledger_only)
    assert main(["reprice", "--dry-run", "--json", "--sources", "config"]) == 0
    config_only = json.loads(capsys.readouterr().out)
    assert {c["model"] for c in config_only} == {"glm-4.6"}
    assert all(c["after_usd"] is None and c["unpriced_after"] > c["unpriced_before"] == 0 for c in config_only)
    assert warehouse_digest(settings) != before and main(["reprice", "--sources", "config"]) == 2
    assert "needs --dry-run" in capsys.readouterr().err
    assert table_rows(settings, "SELECT DISTINCT price_source FROM requests WHERE model = 'glm-4.6'") == [("ledger",)]
