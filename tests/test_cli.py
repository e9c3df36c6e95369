"""The command line as a user meets it: demo, run, backfill, and one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from conftest import make_settings, table_rows
from pipelines import runs
from pipelines.cli import build_parser, main
from pipelines.lib.settings import SECRET_VARIABLES
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("COMETAPI_KEY", "COMETAPI_ACCESS_TOKEN", "COMETAPI_QUERY_URL", "COMETAPI_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMET_LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for name, file in (("COMET_LEDGER_PRICES", "prices.csv"), ("COMET_LEDGER_KEY_OWNERS", "key_owners.csv")):
        monkeypatch.setenv(name, str(REPO / "config" / file))
    return tmp_path


def test_a_missing_price_file_fails_before_any_call(env, capsys, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", "sk-whatever-123456")
    monkeypatch.setenv("COMET_LEDGER_PRICES", str(env / "nowhere.csv"))
    assert main(["run"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("comet-ledger: error: COMET_LEDGER_PRICES points at") and "nowhere.csv" in line


def test_demo_prints_the_per_key_table_matching_the_simulator_and_reruns_safely(env, capsys):
    assert main(["demo", "--days", "8"]) == 0
    out = capsys.readouterr().out
    assert "key_name" in out and "team-a-prod" in out
    assert "matches the simulator exactly" in out
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    # The re-run reports as JSON: the same totals as the table, and the warehouse's figures.
    assert main(["demo", "--days", "8", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert total_line.split() == ["total", str(again["key_days"]), again["reported_usd"], str(again["requests"])]
    assert again["command"] == "demo" and again["days"] == 8 and again["matches_simulator"] is True
    assert_figures_match_the_warehouse(again, env / "home")
    assert again["restatements"]  # the planted restatement, caught by the first run's re-pull
    assert again["request_logs"]["lines_read"] == sum(again["request_logs"][k]
                                                      for k in ("accepted", "rejected", "duplicates"))
    assert len(again["run_ids"]) == 2  # one backfill chunk, the daily run
    # without COMET_LEDGER_START_DATE, the partitions start at the demo's first day (recorded)
    recorded = json.loads((env / "home" / "state" / "first_day.json").read_text())
    assert (recorded["day"], recorded["source"]) == (again["first_day"], "demo")


def assert_figures_match_the_warehouse(summary: dict, home: Path) -> None:
    """The JSON figures of `run`, `backfill` and `demo` against what the warehouse holds for their days."""
    window = {"first": date.fromisoformat(summary["first_day"]), "last": date.fromisoformat(summary["last_day"])}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        [(key_days, usd, requests)] = con.execute(
            "SELECT count(*), sum(reported_cost_usd), sum(reported_requests) FROM quota_daily "
            "WHERE usage_date BETWEEN $first AND $last", window).fetchall()
        statuses = dict(con.execute("SELECT status, count(*) FROM recon_key_daily "
                                    "WHERE usage_date BETWEEN $first AND $last GROUP BY ALL", window).fetchall())
        restated = con.execute("SELECT usage_date, key_name, previous_cost_usd, new_cost_usd FROM quota_restatements "
                               "WHERE usage_date BETWEEN $first AND $last ORDER BY ALL", window).fetchall()
    assert summary["days"] == (window["last"] - window["first"]).days + 1
    assert (summary["key_days"], summary["reported_usd"], summary["requests"]) == (key_days, f"{usd:.6f}", requests)
    assert re.fullmatch(r"\d+\.\d{6}", summary["reported_usd"])
    assert sum(k["days"] for k in summary["keys"]) == key_days
    assert summary["reconciliation"]["statuses"] == statuses
    assert sorted((date.fromisoformat(r["usage_date"]), r["key_name"], Decimal(r["previous_usd"]),
                   Decimal(r["new_usd"])) for r in summary["restatements"]) == restated
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    try:
        assert summary["run_ids"] and all(instance.get_run_by_id(run_id).is_success for run_id in summary["run_ids"])
    finally:
        instance.dispose()


def test_backfill_and_run_report_their_figures_as_one_json_object(env, capsys, monkeypatch):
    traffic = generate_traffic(seed=7, start=date(2026, 10, 1), days=4, requests_per_day=5)
    with SimulatorServer(traffic) as sim:
        for name, value in {"COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url,
                            "COMETAPI_KEY": sim.api_key}.items():
            monkeypatch.setenv(name, value)
        # the progress file an earlier version left: removed, said once; the instance is the record now
        legacy = env / "home" / "state" / "backfill-2026-10-01-2026-10-04.json"
        legacy.parent.mkdir(parents=True, exist_ok=True)
        legacy.write_text('{"done": ["2026-10-01..2026-10-04"]}')
        assert main(["backfill", "--start", "2026-10-01", "--end", "2026-10-04", "--json"]) == 0
        backfilled = capsys.readouterr()
        assert not legacy.exists()
        assert backfilled.err.count(f"removed {legacy}: an interrupted backfill's progress is now read from the "
                                    "Dagster instance; the chunks it listed run again\n") == 1
        assert main(["run", "--date", "2026-10-04", "--repull", "1", "--json"]) == 0
        ran = capsys.readouterr()
    for output, command, first in ((backfilled, "backfill", "2026-10-01"), (ran, "run", "2026-10-03")):
        summary = json.loads(output.out)  # the whole of stdout is one JSON object
        assert summary["command"] == command and summary["first_day"] == first
        assert summary["last_day"] == "2026-10-04"
        assert_figures_match_the_warehouse(summary, env / "home")
        assert "key_name" not in output.err  # no table anywhere
    assert len(json.loads(backfilled.out)["run_ids"]) == 1  # four days: one chunk
    assert json.loads(backfilled.out)["chunks_run"] == 1
    assert_one_planned_event_per_asset(json.loads(backfilled.out)["run_ids"][0], days=4)
    # The pack `review` writes is recorded as the month's partition of reports/review_pack.
    assert main(["review", "--month", "2026-10"]) == 0
    assert capsys.readouterr().out.startswith(f"review pack for 2026-10: {env / 'home' / 'reports' / 'review-2026-10'}")
    [pack] = materialisations(runs.REVIEW_PACK)
    assert pack.partition == "2026-10-01" and pack.metadata["path"].value == str(env / "home" / "reports" / "review-2026-10")
    assert pack.metadata["partial_month"].value is False and pack.metadata["flagged_key_days"].value >= 0


def assert_one_planned_event_per_asset(run_id: str, days: int) -> None:
    """The run planned each asset once (with its range), and still recorded a materialisation per day."""
    assert runs.PLANNED_EVENTS_VARIABLE not in os.environ  # set for the runs only
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    try:
        def events(kind: dg.DagsterEventType) -> list:
            return [record.event_log_entry.dagster_event
                    for record in instance.get_records_for_run(run_id, of_type=kind, limit=10_000).records]

        planned = [event.event_specific_data for event in events(dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)]
        materialized = Counter(event.asset_key for event in events(dg.DagsterEventType.ASSET_MATERIALIZATION))
    finally:
        instance.dispose()
    assert planned and len({p.asset_key for p in planned}) == len(planned) == len(materialized)
    # no planned event per partition; the daily assets' one event names the run's days. (An unpartitioned
    # asset's event names them too only when Dagster takes the run's partitions from a partitioned asset:
    # it takes them from the last asset of the plan, which a new unpartitioned asset can be.)
    assert all(p.partition is None for p in planned)
    ranged = {p.asset_key for p in planned if p.partitions_subset is not None}
    assert all(len(p.partitions_subset) == days for p in planned if p.partitions_subset is not None)
    assert {dg.AssetKey(["lake", "request_logs"]), dg.AssetKey(["warehouse", "recon_key_daily"])} <= ranged
    # the daily assets still record one materialisation per day; the others (snapshots, config) one
    daily = {key for key, count in materialized.items() if count == days}
    assert {dg.AssetKey(["lake", "request_logs"]), dg.AssetKey(["warehouse", "recon_key_daily"])} <= daily
    assert set(materialized.values()) == {1, days}


def test_a_json_run_that_fails_prints_one_line_on_stderr_and_nothing_on_stdout(env, capsys):
    assert main(["run", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("comet-ledger: error: COMETAPI_KEY is not set")


def test_every_command_and_option_explains_itself(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    top = capsys.readouterr().out
    assert "examples:" in top and top.count("comet-ledger ") >= 3
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"demo", "run", "backfill", "review", "export", "reprice", "smoke-test", "simulate",
                                     "dev", "alerts", "open-latest"}
    for name, command in commands.choices.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        assert command.description and f"usage: comet-ledger {name}" in capsys.readouterr().out
        for option in command._actions:
            if isinstance(option, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(option.option_strings)}"
            assert option.help and option.help != argparse.SUPPRESS, label
            assert "(required)" in option.help if option.required else "default" in option.help, label


def test_bad_setting_is_one_line_naming_the_variable(env, capsys, monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_START_DATE", "01/02/2025")
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["comet-ledger: error: COMET_LEDGER_START_DATE='01/02/2025' is not a date in YYYY-MM-DD form"]


def test_every_secret_variable_is_masked_before_the_settings_load(env, capsys, monkeypatch):
    """A bad setting stops the settings from loading; the message still masks the value of every
    secret variable (pipelines/lib/settings.py: SECRET_VARIABLES), here echoed in a bad time zone."""
    for name in SECRET_VARIABLES:
        canary = f"plainCANARY-{name.lower()}"
        monkeypatch.setenv(name, canary)
        monkeypatch.setenv("COMET_LEDGER_TIMEZONE", canary)
        assert main(["run"]) == 2
        assert capsys.readouterr().err == ("comet-ledger: error: COMET_LEDGER_TIMEZONE='***' is not an IANA time "
                                           "zone (e.g. UTC, Asia/Shanghai)\n"), name
        monkeypatch.delenv(name)


def test_run_without_a_key_says_which_variable(env, capsys):
    assert main(["run"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("comet-ledger: error: COMETAPI_KEY is not set")


def test_backfill_rejects_a_reversed_range(env, capsys, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", "sk-whatever-123456")
    assert main(["backfill", "--start", "2026-03-10", "--end", "2026-03-01"]) == 2
    assert "--end 2026-03-01 is before --start 2026-03-10" in capsys.readouterr().err


def test_backfill_rejects_a_malformed_date(env, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["backfill", "--start", "2026/03/01", "--end", "2026-03-02"])
    assert exit_.value.code == 2
    assert "'2026/03/01' is not a date in YYYY-MM-DD form" in capsys.readouterr().err


def test_a_failed_run_is_one_line_without_the_key(env, capsys, monkeypatch):
    traffic = generate_traffic(seed=7, start=date(2026, 10, 1), days=5, requests_per_day=5)
    with SimulatorServer(traffic, api_key="sk-CLICANARY-0123456789") as sim:
        monkeypatch.setenv("COMETAPI_QUERY_URL", sim.url)
        monkeypatch.setenv("COMETAPI_KEY", "sk-CLICANARY-wrong-0000")
        monkeypatch.setenv("COMET_LEDGER_START_DATE", "2026-10-01")
        assert main(["run", "--date", "2026-10-05"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("materialising")
    assert "HTTP 401" in err[1] and "COMETAPI_KEY" in err[1]
    assert "CLICANARY" not in "\n".join(err)


def test_an_interrupted_backfill_resumes_and_a_finished_one_repulls(tmp_path, monkeypatch):
    traffic = generate_traffic(seed=5, start=date(2026, 8, 1), days=8, requests_per_day=4)
    with SimulatorServer(traffic) as sim:
        # chunks of 5 query days keep 4: the 8 days are two chunks, one query call each
        settings = make_settings(tmp_path / "home", sim, COMET_LEDGER_START_DATE="2026-01-01",
                                 COMET_LEDGER_CHUNK_DAYS="5", COMET_LEDGER_PRICES=str(REPO / "config" / "prices.csv"),
                                 COMET_LEDGER_KEY_OWNERS=str(REPO / "config" / "key_owners.csv"))
        monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
        first, last = date(2026, 8, 1), date(2026, 8, 8)

        def stop_after_first(chunk, index, count):
            if index == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            runs.backfill(settings, first, last, on_progress=stop_after_first)
        calls_before = len([c for c in sim.calls if "start_date" in c.params])
        assert calls_before == 1
        with pytest.raises(KeyboardInterrupt):  # --restart: the first chunk again, and again interrupted
            runs.backfill(settings, first, last, restart=True, on_progress=stop_after_first)
        assert len([c for c in sim.calls if "start_date" in c.params]) == 2
        resumed: list[str] = []
        assert runs.backfill(settings, first, last, run_ids=resumed) == (1, 1)  # resumed: one chunk left
        assert len([c for c in sim.calls if "start_date" in c.params]) == 3
        assert runs.backfill(settings, first, last) == (2, 0)  # finished before: re-pulls all
        # the instance is the backfill's only record: each run names the backfill and its own days
        assert not list((settings.home / "state").glob("backfill-*"))
        instance = dg.DagsterInstance.get()
        try:
            recorded = [(r.tags[runs.BACKFILL_TAG], r.tags["dagster/asset_partition_range_start"],
                         r.tags.get(runs.BACKFILL_ENDED_TAG), r.status)
                        for r in instance.get_runs(dg.RunsFilter(job_name=runs.JOB_NAME), ascending=True)]
            [second] = resumed
            assert instance.get_run_by_id(second).tags[runs.BACKFILL_ENDED_TAG] == "2026-08-01..2026-08-08"
        finally:
            instance.dispose()
        ok, backfill = dg.DagsterRunStatus.SUCCESS, "2026-08-01..2026-08-08"
        assert recorded == [(backfill, "2026-08-01", backfill, ok),  # ended by --restart
                            (backfill, "2026-08-01", None, ok), (backfill, "2026-08-05", backfill, ok),
                            (backfill, "2026-08-01", None, ok), (backfill, "2026-08-05", backfill, ok)]
        truth = sim.truth()  # the restatement became visible after the first pull of its day
        rows = table_rows(settings, "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily")
        assert {(d, k): (c, n) for d, k, c, n in rows} == {k: v for k, v in truth.items() if first <= k[0] <= last}
        assert last - first == timedelta(days=7)


def test_a_backfill_resumes_from_the_successful_runs_the_instance_records_since_it_began():
    """What counts as a done chunk, on run records alone: a successful run of the job for exactly
    the chunk's days since the backfill's first run, whatever launched it; nothing once it ended."""
    from pipelines.defs.schedules import partition_range_tags

    plan = runs.chunks(date(2026, 3, 1), date(2026, 3, 9), 3)
    a, b, c = plan
    name = "2026-03-01..2026-03-09"
    instance = dg.DagsterInstance.ephemeral()

    def record(chunk, status=dg.DagsterRunStatus.SUCCESS, job=runs.JOB_NAME, **tags) -> str:
        run = dg.DagsterRun(job_name=job, run_id=f"run-{len(instance.get_runs())}", status=status,
                            tags={**partition_range_tags(chunk.first.isoformat(), chunk.last.isoformat()), **tags})
        instance.add_run(run)
        return run.run_id

    try:
        record(a)  # a run of a's days before any backfill of the range: not this backfill's work
        assert runs.done_chunks(instance, name, plan) == set()
        record(a, status=dg.DagsterRunStatus.FAILURE, **{runs.BACKFILL_TAG: name})  # the backfill begins
        assert runs.done_chunks(instance, name, plan) == set()
        record(a, **{runs.BACKFILL_TAG: name})
        record(b)  # `comet-ledger run` for exactly b's days: the same work, done
        record(c, job="other_job")  # another job's run is not
        record(runs.Chunk(c.first, c.last + timedelta(days=1)))  # nor a run of other days
        record(c, status=dg.DagsterRunStatus.FAILURE, **{runs.BACKFILL_TAG: name})
        record(c, **{runs.BACKFILL_TAG: "2026-03-07..2026-03-09"})  # another backfill's run of c's days: done
        assert runs.done_chunks(instance, name, plan) == {a.label, b.label, c.label}
        assert runs.done_chunks(instance, "2026-03-07..2026-03-09", [c]) == {c.label}
        # ended (finished, or abandoned by --restart): the next backfill of the range starts afresh
        runs.end_backfill(instance, name)
        assert runs.done_chunks(instance, name, plan) == set()
        record(b, **{runs.BACKFILL_TAG: name})
        assert runs.done_chunks(instance, name, plan) == {b.label}
        runs.end_backfill(instance, name)
        assert [r.tags.get(runs.BACKFILL_ENDED_TAG) for r in instance.get_runs(
            dg.RunsFilter(tags={runs.BACKFILL_TAG: name}), ascending=True)] == [None, None, name, name]
    finally:
        instance.dispose()


def test_simulate_serves_the_simulator_in_the_foreground(env):
    import signal
    import subprocess
    import sys

    import httpx

    # As from a terminal: SIGINT at its default (a shell's background job would inherit it ignored).
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "simulate", "--port", "0", "--days", "5",
                             "--fault", "accept_malformed_dates"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()
        assert first.startswith("CometAPI simulator on http://127.0.0.1:")
        url = first.split()[3]
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        key = next(line.split("=", 1)[1] for line in lines if line.startswith("COMETAPI_KEY="))
        body = httpx.get(f"{url}/user/quota", params={"key": key}, timeout=5).json()
        assert body["username"] and isinstance(body["keys"], list)
        # The fault switch is on: a malformed date is silently accepted.
        bad = httpx.get(f"{url}/user/quota", params={"key": key, "start_date": "2026/06/01", "end_date": "2026/06/30"},
                        timeout=5)
        assert bad.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_smoke_test_passes_on_the_simulator_and_fails_when_it_accepts_bad_dates(env, capsys, monkeypatch):
    import json

    import duckdb

    traffic = generate_traffic(seed=7, start=date(2026, 10, 1), days=5, requests_per_day=5)
    with SimulatorServer(traffic) as sim:
        for name, value in {"COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url,
                            "COMETAPI_KEY": sim.api_key}.items():
            monkeypatch.setenv(name, value)
        assert main(["smoke-test", "--json", "--reviewer", "ana", "--known-active-range", "2026-10-01..2026-10-05"]) == 0
        passed = json.loads(capsys.readouterr().out)
        sim.faults.add("accept_malformed_dates")
        assert main(["smoke-test", "--known-active-range", "2026-10-01..2026-10-05"]) == 1
        out = capsys.readouterr().out
    assert passed["error_path_returned_error"] is True and passed["reviewer"] == "ana"
    assert "silently accepted the malformed date 2026/06/01" in out
    with duckdb.connect(str(env / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT error_path_returned_error, passed FROM smoke_tests ORDER BY checked_at").fetchall()
    assert rows == [(True, True), (False, False)]
    # Both are in the Dagster instance the UI reads, as materialisations of the table they were added to.
    recorded = materialisations(runs.SMOKE_TESTS)
    assert [(m.metadata["passed"].value, m.metadata["dagster/row_count"].value) for m in recorded] == [(True, 1),
                                                                                                       (False, 2)]
    assert "silently accepted the malformed date" in recorded[1].metadata["failures"].value


def materialisations(key: dg.AssetKey) -> list[dg.AssetMaterialization]:
    """Every materialisation of `key` in the instance at DAGSTER_HOME, oldest first."""
    instance = dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"])
    try:
        records = instance.fetch_materializations(key, limit=100, ascending=True).records
        return [r.asset_materialization for r in records]
    finally:
        instance.dispose()


def test_the_instance_the_command_line_creates_limits_the_writer_pool_to_one(env, tmp_path):
    from pipelines.defs.pools import WRITER_POOL
    from pipelines.lib.settings import load_settings

    settings = load_settings(env={"COMET_LEDGER_HOME": str(tmp_path / "home")})
    instance = runs.instance_for(settings)
    try:
        assert runs.writer_pool_limit(instance) == 1
        assert instance.event_log_storage.get_concurrency_info(WRITER_POOL).limit == 1
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    finally:
        instance.dispose()
    config = Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml"
    written = config.read_text()
    assert written == runs.instance_config()  # pipelines/dagster.yaml, its pool filled in from pools.py
    assert "${" not in written and "# Dagster declares a pool's limit in the instance" in written
    assert yaml.safe_load(written) == {"telemetry": {"enabled": False},
                                       "concurrency": {"pools": {"granularity": "run", "default_limit": 1}}}
    assert "default_limit: 1  # duckdb_writer, the only pool\n" in written
    # A home written by an earlier version is brought up to date; a dagster.yaml of your own is yours.
    for earlier in runs.EARLIER_INSTANCE_CONFIGS:
        config.write_text(earlier)
        runs.ensure_dagster_home(config.parent)
        assert config.read_text() == written
    config.write_text("telemetry:\n  enabled: true\n")
    runs.ensure_dagster_home(config.parent)
    assert config.read_text() == "telemetry:\n  enabled: true\n"


def test_alerts_test_reaches_every_channel_and_check_records_without_channels(env, capsys, monkeypatch):
    from receivers import SmtpReceiver, WebhookReceiver

    assert main(["alerts", "check"]) == 0  # nothing configured, nothing wrong: says so, writes nothing
    captured = capsys.readouterr()
    assert captured.out == "0 alert(s) opened, 0 resolved, 0 expired; 0 note(s) sent, 0 failed\n"
    assert "no alert channel is configured" in captured.err
    assert not (env / "home" / "warehouse.duckdb").exists()
    with WebhookReceiver() as hook, SmtpReceiver() as mail:
        for name, value in {"COMET_LEDGER_ALERT_SLACK_URL": hook.url("/slack"),
                            "COMET_LEDGER_ALERT_WEBHOOK_URL": hook.url("/hook"),
                            "COMET_LEDGER_ALERT_SMTP_HOST": "127.0.0.1", "COMET_LEDGER_ALERT_SMTP_PORT": str(mail.port),
                            "COMET_LEDGER_ALERT_SMTP_STARTTLS": "false",
                            "COMET_LEDGER_ALERT_SMTP_FROM": "ledger@example.org",
                            "COMET_LEDGER_ALERT_SMTP_TO": "finance@example.org,ops@example.org"}.items():
            monkeypatch.setenv(name, value)
        assert main(["alerts", "test"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Slack webhook: sent (1 attempt(s))", "JSON webhook: sent (1 attempt(s))",
                                                    "e-mail: sent (1 attempt(s))"]
    assert sorted(p.path for p in hook.posts) == ["/hook", "/slack"]
    assert {p.body.get("event") for p in hook.posts} == {None, "test"}  # Slack's body is text only
    [received] = mail.mails
    assert received.recipients == ["finance@example.org", "ops@example.org"]
    assert received.subject == "comet-ledger: [TEST] comet-ledger alerts reach this channel"


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_api_fails_at_once_from_the_command_line(env, capsys, caplog, monkeypatch):
    """A refused first connection is a wrong URL or a service that is down: `run` and `smoke-test`
    give up after that one attempt, naming the variable, instead of retrying for a minute."""
    import logging

    from pipelines.definitions import build_definitions
    from pipelines.lib.settings import load_settings

    caplog.set_level(logging.WARNING, logger="comet_ledger.http")
    url = f"http://127.0.0.1:{closed_port()}"
    for name in ("COMETAPI_QUERY_URL", "COMETAPI_API_URL"):
        monkeypatch.setenv(name, url)
    monkeypatch.setenv("COMETAPI_KEY", "sk-whatever-123456")
    assert main(["run", "--date", "2026-10-05", "--repull", "0"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("comet-ledger: error: ") and "GET /user/quota failed: connection failed (refused" in last
    assert "(check COMETAPI_QUERY_URL)" in last and "attempts" not in last
    assert main(["smoke-test", "--known-active-range", "2026-10-01..2026-10-05"]) == 1
    assert "connection failed (refused" in capsys.readouterr().out
    assert [r.getMessage() for r in caplog.records if r.name == "comet_ledger.http"] == []  # no retry at all
    # A scheduled run (the definitions Dagster loads) keeps the whole retry budget.
    settings = load_settings()
    scheduled = build_definitions(settings).resources["query_service"]
    interactive = build_definitions(settings, interactive=True).resources["query_service"]
    assert (scheduled.max_attempts, scheduled.unreachable_attempts) == (5, None)
    assert interactive.unreachable_attempts == 1


def test_a_backfill_logs_progress_lines_when_stderr_is_not_a_terminal(env, capsys, monkeypatch):
    """cron, CI and Dagster's logs get whole lines: one per chunk of days done, and one at least every
    PROGRESS_EVERY_S while a chunk runs (shortened here), never a bar redrawn with carriage returns."""
    from pipelines.cli import pipeline

    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.1)
    traffic = generate_traffic(seed=7, start=date(2026, 10, 1), days=4, requests_per_day=3)
    with SimulatorServer(traffic) as sim:
        for name, value in {"COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url, "COMETAPI_KEY": sim.api_key,
                            "COMET_LEDGER_CHUNK_DAYS": "3"}.items():  # chunks of 2 days: 2 runs
            monkeypatch.setenv(name, value)
        assert main(["backfill", "--start", "2026-10-01", "--end", "2026-10-04", "--json"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("backfill: ")]
    shapes = [re.sub(r", \d+ s: ", ", N s: ", line) for line in lines if "working on" not in line]
    assert shapes == ["backfill: 0/4 days, N s: starting 2026-10-01..2026-10-02",
                      "backfill: 2/4 days, N s: 2026-10-01..2026-10-02 done, next 2026-10-03..2026-10-04",
                      "backfill: 4/4 days, N s: 2026-10-03..2026-10-04 done"]
    beats = [line for line in lines if "working on" in line]
    assert beats and all(re.fullmatch(r"backfill: [02]/4 days, \d+ s: working on 2026-10-0[13]\.\.2026-10-0[24]", b)
                         for b in beats)


def test_version_and_a_wrong_option_answer_with_the_commands_own_usage(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"comet-ledger {metadata.version('comet-ledger')}\n"
    for command, *given in (("run",), ("backfill", "--start", "2026-10-01", "--end", "2026-10-02"), ("smoke-test",)):
        with pytest.raises(SystemExit) as exit_:
            main([command, *given, "--bogus"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert err.startswith(f"usage: comet-ledger {command} ")
        assert f"comet-ledger {command}: error: unrecognized arguments: --bogus" in err


def test_the_readme_command_table_lists_every_option():
    """Each `comet-ledger` row of the README's command table names exactly the options its command has."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Command line"):]
    table = table[:table.index("\n\n", table.index("| command |"))]
    rows = re.findall(r"^\| `comet-ledger ([^`]+)` \|", table, flags=re.M)
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    expected = {("--version",): set()}  # a command with subcommands of its own has a row for each
    for name, command in commands.choices.items():
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for key, parser in ([((name, sub), p) for sub, p in nested[0].choices.items()] if nested else [((name,), command)]):
            expected[key] = {o for a in parser._actions if not isinstance(a, argparse._HelpAction) for o in a.option_strings}
    listed = {}
    for row in rows:
        words = row.split()
        key = tuple(words[:2]) if tuple(words[:2]) in expected else tuple(words[:1])
        listed[key] = {flag for flag in re.findall(r"--[a-z-]+", row)}
    assert set(listed) == set(expected)
    for key, options in expected.items():
        if key != ("--version",):
            assert listed[key] == options, key
