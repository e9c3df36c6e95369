"""Client logs and the gateway ledger against the simulator: every planted reality is in the data."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import timedelta

import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days
from pipelines.lib.gateway import ledger as gateway_ledger
from pipelines.simulator.inbox import write_inbox

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
LOG_CONSUME = 2


def lake_rows(settings, dataset: str, sql_tail: str = "", params: dict | None = None) -> list[dict]:
    """Rows of a lake dataset as dicts (column name -> value)."""
    import duckdb

    files = sorted(str(p) for p in (settings.lake / dataset).glob("*/*.parquet"))
    with duckdb.connect() as con:
        # as the product's own connections do: timestamps come back in UTC, whatever the process's TZ
        con.execute("SET TimeZone = 'UTC'")
        result = con.execute(f"SELECT * FROM read_parquet($f) {sql_tail}", {"f": files, **(params or {})})
        names = [d[0] for d in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]


@pytest.fixture
def ledger_settings(tmp_path, sim, traffic, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    monkeypatch.setenv("COMETAPI_ACCESS_TOKEN", sim.access_token)
    settings = make_settings(tmp_path / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token)
    write_inbox(traffic, settings.inbox)
    return settings


def client_logged(traffic) -> set[str]:
    return {r.request_id for r in traffic.iter_requests()
            if r.client_logged and r.log_type == LOG_CONSUME and not r.correction_of}


def test_client_logs_land_once_each_on_their_own_day(ledger_settings, traffic):
    materialize_days(ledger_settings, SIM_START, LAST)
    landed = lake_rows(ledger_settings, "request_logs", "ORDER BY request_id")
    ids = [row["request_id"] for row in landed]
    assert len(ids) == len(set(ids))
    assert set(ids) == client_logged(traffic)
    by_id = {r.request_id: r for r in traffic.iter_requests()}
    # every request sits in the partition of its own UTC day, with the simulator's own token counts
    for row in landed:
        assert row["utc_date"] == by_id[row["request_id"]].ts.date() == row["ts"].date()
    statuses = Counter(row["usage_status"] for row in landed)
    tasks = {r.request_id for r in traffic.iter_requests() if r.usage_shape == "task"} & client_logged(traffic)
    assert statuses == {"known": len(landed) - len(tasks) - 3, "per_call": len(tasks), "unknown": 3}
    known = [row for row in landed if row["usage_status"] == "known"]
    for row in known:
        expected = by_id[row["request_id"]]
        got = tuple(row[c] for c in ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
                                     "reasoning_tokens"))
        assert got == (
            expected.prompt_tokens, expected.completion_tokens, expected.cached_tokens,
            expected.cache_write_tokens, expected.reasoning_tokens), row["request_id"]


def test_every_usage_shape_and_the_interrupted_streams_are_visible(ledger_settings, traffic):
    materialize_days(ledger_settings, SIM_START, LAST)
    shapes = Counter(row["usage_shape"] for row in lake_rows(ledger_settings, "request_logs"))
    assert set(shapes) >= {"chat_completion", "chat_completion_chunk", "response", "response_completed",
                           "anthropic_message", "anthropic_message_delta", "task"}
    planted = traffic.planted["unknown_usage"]
    unknown = lake_rows(ledger_settings, "request_logs", "WHERE usage_status = 'unknown' ORDER BY request_id")
    assert sorted(row["request_id"] for row in unknown) == sorted(planted["request_ids"])
    assert all(row[c] is None for row in unknown for c in ("prompt_tokens", "completion_tokens", "total_tokens"))


def test_the_gateway_ledger_matches_the_query_service_and_shows_the_unlogged_requests(ledger_settings, sim, traffic):
    materialize_days(ledger_settings, SIM_START, LAST)
    materialize_days(ledger_settings, SIM_START, LAST)  # second pull: the late correction is visible
    rows = lake_rows(ledger_settings, "gateway_logs")
    assert len({(r["request_id"], r["log_type"], r["created_at"], r["quota_units"]) for r in rows}) == len(rows)
    # per key-day, billed USD and request counts equal what the query service reports
    billed: dict = {}
    for r in rows:
        if r["log_type"] in (2, 6):
            cost, n = billed.get((r["utc_date"], r["key_name"]), (0, 0))
            is_request = r["log_type"] == 2 and not r["is_correction"]
            billed[(r["utc_date"], r["key_name"])] = (cost + r["billed_usd"], n + int(is_request))
    assert billed == sim.truth()
    # the planted leak: billed by the gateway, absent from the client logs
    planted = traffic.planted["missing_logs"]
    client_ids = {row["request_id"] for row in lake_rows(ledger_settings, "request_logs")}
    gateway_ids = {r["request_id"] for r in rows if r["log_type"] == 2 and not r["is_correction"]}
    assert gateway_ids - client_ids == set(planted["request_ids"])
    leaked = [r for r in rows if r["request_id"] in planted["request_ids"]]
    assert {r["source_ip"] for r in leaked} == {planted["source_ip"]}
    assert sum(r["billed_usd"] for r in leaked) == planted["usd"]
    # refunds and task corrections are rows of their own
    assert any(r["log_type"] == 6 and r["billed_usd"] < 0 for r in rows)
    # a task whose final price was lower: since 2026-02 a type-6 row tied to its task (service/task_billing.go)
    assert any(r["log_type"] == 6 and r["pre_consumed_quota"] and r["billed_usd"] < 0 for r in rows)


def test_rerun_skips_staged_files_and_a_resent_file_counts_as_duplicates(ledger_settings):
    from conftest import table_rows

    materialize_days(ledger_settings, SIM_START, LAST)
    before = lake_rows(ledger_settings, "request_logs", "ORDER BY request_id")
    staged = sorted((ledger_settings.lake / "inbox_manifest").iterdir())
    # the same file again under another name: every line is a duplicate
    some_file = next(p for p in sorted(ledger_settings.inbox.rglob("*.jsonl")))
    resent = some_file.with_name("resent-" + some_file.name)
    shutil.copy(some_file, resent)
    materialize_days(ledger_settings, SIM_START, LAST)
    assert len(sorted((ledger_settings.lake / "inbox_manifest").iterdir())) == len(staged) + 1
    assert lake_rows(ledger_settings, "request_logs", "ORDER BY request_id") == before
    [(read, accepted, rejected, duplicates)] = table_rows(
        ledger_settings, "SELECT lines_read, accepted, rejected, duplicates FROM inbox_files WHERE file = $f",
        {"f": resent.relative_to(ledger_settings.inbox).as_posix()})
    assert read == duplicates > 0 and accepted == rejected == 0
    totals = table_rows(ledger_settings, "SELECT sum(lines_read), sum(accepted) + sum(rejected) + sum(duplicates), "
                                         "bool_and(balanced) FROM inbox_files")
    assert totals[0][0] == totals[0][1] and totals[0][2]


def test_a_changed_file_is_read_again_and_its_bad_line_rejected(ledger_settings):
    from conftest import table_rows

    materialize_days(ledger_settings, SIM_START, LAST)
    target = sorted(ledger_settings.inbox.rglob("*.jsonl"))[0]
    with target.open("a") as fh:
        fh.write('{"request_id": "x", "response": {"object": "chat.completion"\n')
    materialize_days(ledger_settings, SIM_START, LAST)
    rejects = table_rows(ledger_settings, "SELECT source, file, reason FROM rejects")
    assert rejects == [("client_log", target.relative_to(ledger_settings.inbox).as_posix(), "invalid_json")]
    [(versions,)] = table_rows(ledger_settings, "SELECT count(*) FROM inbox_files WHERE file = $f",
                               {"f": target.relative_to(ledger_settings.inbox).as_posix()})
    assert versions == 1  # the new version replaced the old one


def test_without_an_access_token_the_ledger_is_skipped(tmp_path, sim, traffic, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    settings = make_settings(tmp_path / "home", sim)
    write_inbox(traffic, settings.inbox)
    result = materialize_days(settings, SIM_START, LAST)
    assert not (settings.lake / "gateway_logs").exists()
    assert not [c for c in sim.calls if c.path == "/api/log/self"]
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "lake/gateway_logs"]
    assert len(events) == SIM_DAYS  # one per partition of the range
    assert all(e.materialization.metadata["skipped"].value is True for e in events)


def test_a_console_csv_export_feeds_the_ledger_without_a_token(tmp_path, sim, traffic, monkeypatch):
    import csv
    import json

    import httpx

    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    settings = make_settings(tmp_path / "home", sim)
    items = httpx.get(f"{sim.url}/api/log/self", params={"p": 1, "page_size": 100, "type": 0},
                      headers={"Authorization": f"Bearer {sim.access_token}"}).json()["data"]["items"]
    export = settings.inbox / "gateway" / "export.csv"
    export.parent.mkdir(parents=True)
    columns = ["id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
               "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "other"]
    with export.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for item in items:
            values = {c: item.get(c, "") for c in columns}  # request_id is omitted on rows without one
            writer.writerow({c: json.dumps(v) if isinstance(v, bool) else v for c, v in values.items()})
    materialize_days(settings, SIM_START, LAST)
    rows = lake_rows(settings, "gateway_logs")
    expected = [gateway_ledger.parse_item(i) for i in items]
    in_window = [e for e in expected if SIM_START <= e.utc_date <= LAST]
    assert sorted(r["request_id"] for r in rows) == sorted(e.request_id for e in in_window)
    assert {r["source"] for r in rows} == {"csv_export"}


def test_warehouse_inbox_files_is_kept_while_nothing_it_reads_changed(tmp_path, sim, traffic, monkeypatch):
    from conftest import table_rows
    from pipelines.lib import warehouse

    monkeypatch.setenv("COMETAPI_KEY", sim.api_key)
    settings = make_settings(tmp_path / "home", sim)
    write_inbox(traffic, settings.inbox)

    def run() -> tuple[bool, list[tuple]]:
        result = materialize_days(settings, SIM_START, LAST)
        [event] = [e for e in result.get_asset_materialization_events()
                   if e.asset_key.to_user_string() == "warehouse/inbox_files"]
        files = table_rows(settings, "SELECT file, file_id, lines_read, accepted, rejected, duplicates, staged_at "
                                     "FROM inbox_files ORDER BY file")
        return event.materialization.metadata["rebuilt"].value, files

    built, first = run()
    kept, second = run()
    assert (built, kept) == (True, False)
    assert second == first and len(first) > 0
    [(recorded,)] = table_rows(settings, "SELECT count(*) FROM rebuild_inputs WHERE relation = 'inbox_files'")
    assert recorded == 1

    # a new file: rebuilt, and its lines are duplicates of the copies already landed
    some_file = sorted(settings.inbox.rglob("*.jsonl"))[0]
    resent = some_file.with_name("resent-" + some_file.name)
    shutil.copy(some_file, resent)
    rebuilt, third = run()
    assert rebuilt is True and len(third) == len(first) + 1
    [(read, duplicates)] = [(r[2], r[5]) for r in third if r[0] == resent.relative_to(settings.inbox).as_posix()]
    assert read == duplicates > 0

    # another version of the ranking SQL: rebuilt, though no file changed
    real_sha = warehouse.model_sha
    monkeypatch.setattr(warehouse, "model_sha", lambda name: "other" if name == "stg_copy_ranks" else real_sha(name))
    rebuilt, fourth = run()
    assert rebuilt is True and [r[:6] for r in fourth] == [r[:6] for r in third]


def test_a_run_removes_the_temporary_files_a_killed_pull_left_over_a_day_ago(ledger_settings):
    import os

    from pipelines.lib.lake import STALE_TEMPORARY_S

    materialize_days(ledger_settings, SIM_START, SIM_START)
    day = ledger_settings.lake / "gateway_logs" / f"utc_date={SIM_START.isoformat()}"
    left = day / ".ledger.parquet.0123456789abcdef.tmp"
    at_work = day / ".ledger.parquet.fedcba9876543210.tmp"
    for path, age in ((left, STALE_TEMPORARY_S + 60), (at_work, 60)):
        path.write_bytes(b"PAR1 cut short")
        written = path.stat().st_mtime  # the file system's clock, whatever the process's says
        os.utime(path, (written - age, written - age))
    materialize_days(ledger_settings, SIM_START, SIM_START)
    assert not left.exists() and at_work.exists()
    assert (day / "ledger.parquet").exists()
