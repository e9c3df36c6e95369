"""The query key is in the URL; it must appear nowhere the pipeline writes or prints."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days
from pipelines.lib.simulator.server import SimulatorServer

CANARY_KEY = "sk-LEAKCANARY-7f3a9c2e5b1d4068"
CANARY_PART = "LEAKCANARY"
LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
FIRST = LAST - timedelta(days=3)  # every failure path is the same for 4 days as for 30

FAILURES = [
    ("bad_key", None),
    ("status", {"codes": [500] * 10}),
    ("maintenance", {}),
    ("html_redirect", {}),
    ("error_body_200", {}),
    ("truncated_json", {}),
    ("reset", {}),
    ("slow", {"delay": 1.5}),
    ("renamed_field", {"from_": "token_name", "to": "label"}),
]


def dagster_home(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").touch()
    return str(home)


def scan(root) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if CANARY_PART.encode() in data:
                hits.append(str(path))
    return hits


@pytest.mark.parametrize("failure, opts", FAILURES, ids=[f for f, _ in FAILURES])
def test_no_failure_path_leaks_the_key(tmp_path, traffic, capfd, caplog, failure, opts):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY) as sim:
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY)
        if failure == "bad_key":
            settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY + "-wrong")
        else:
            sim.faults.add(failure, times=None, **opts)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            result = materialize_days(settings, FIRST, LAST, raise_on_error=False, instance=instance,
                                      timeout_s=1.0, max_attempts=2)
            assert not result.success
            errors = [str(e.event_specific_data.error) for e in result.all_events
                      if e.is_step_failure and e.event_specific_data.error]
            assert errors, "the failing step should report an error"
            assert not any(CANARY_PART in e for e in errors)
            stored = "\n".join(str(r.dagster_event) + str(r.user_message) for r in instance.all_logs(result.run_id))
            assert CANARY_PART not in stored
    out, err = capfd.readouterr()
    assert CANARY_PART not in out + err
    assert not [r for r in caplog.records if CANARY_PART in r.getMessage()]
    assert scan(tmp_path) == []


def test_happy_path_leaks_nothing_either(tmp_path, traffic, capfd, caplog):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY) as sim:
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            assert materialize_days(settings, FIRST, LAST, instance=instance).success
    out, err = capfd.readouterr()
    assert CANARY_PART not in out + err
    assert not [r for r in caplog.records if CANARY_PART in r.getMessage()]
    assert scan(tmp_path) == []


CANARY_TOKEN = "tok-TOKENCANARY-51c0ffee"
LEDGER_FAILURES = [("bad_token", None), ("status", {"codes": [503] * 10}), ("html_redirect", {}),
                   ("truncated_json", {}), ("reset", {})]


@pytest.mark.parametrize("failure, opts", LEDGER_FAILURES, ids=[f for f, _ in LEDGER_FAILURES])
def test_no_ledger_failure_leaks_the_access_token(tmp_path, traffic, capfd, caplog, failure, opts):
    caplog.set_level("DEBUG")
    with SimulatorServer(traffic, api_key=CANARY_KEY, access_token=CANARY_TOKEN) as sim:
        token = CANARY_TOKEN + "-wrong" if failure == "bad_token" else CANARY_TOKEN
        settings = make_settings(tmp_path / "home", sim, COMETAPI_KEY=CANARY_KEY, COMETAPI_ACCESS_TOKEN=token)
        if failure != "bad_token":
            sim.faults.add(failure, times=None, paths=["/api/log/self"], **opts)
        with dg.instance_for_test(temp_dir=dagster_home(tmp_path)) as instance:
            result = materialize_days(settings, FIRST, LAST, raise_on_error=False, instance=instance,
                                      timeout_s=1.0, max_attempts=2)
            failed = [e for e in result.all_events if e.is_step_failure]
            assert [e.step_key for e in failed] == ["lake__gateway_logs"]
            stored = "\n".join(str(r.dagster_event) + str(r.user_message) for r in instance.all_logs(result.run_id))
            assert "TOKENCANARY" not in stored and CANARY_PART not in stored
    out, err = capfd.readouterr()
    assert "TOKENCANARY" not in out + err
    assert not [r for r in caplog.records if "TOKENCANARY" in r.getMessage()]
    hits = [str(p) for p in tmp_path.rglob("*") if p.is_file() and b"TOKENCANARY" in p.read_bytes()]
    assert hits == []
