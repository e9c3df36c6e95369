"""The inbox sensor asks for staging when files appear or change, then for the days they touch."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import dagster as dg

from conftest import make_settings
from pipelines.definitions import build_definitions
from pipelines.lib.request_logs import lake as request_log_lake
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.traffic import generate_traffic


def evaluate(sensor, instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, result.cursor


def test_new_files_are_staged_then_their_days_assembled(tmp_path, sim):
    settings = make_settings(tmp_path / "home", sim)
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("inbox_sensor")
    with dg.instance_for_test() as instance:
        result, cursor = evaluate(sensor, instance, None)
        assert result.run_requests == [] and result.skip_message

        traffic = generate_traffic(seed=2, start=date(2026, 10, 3), days=3, requests_per_day=6)
        write_inbox(traffic, settings.inbox)
        result, cursor = evaluate(sensor, instance, cursor)
        assert [r.job_name for r in result.run_requests] == ["inbox_staging"]

        # Nothing changed since: no new request.
        result, cursor = evaluate(sensor, instance, cursor)
        assert result.run_requests == []

        # Once staged, the days the files touch are assembled (one range run).
        for item in request_log_lake.pending_files(settings.lake, settings.inbox):
            request_log_lake.stage_file(settings.lake, settings.inbox, item, datetime.now(timezone.utc))
        result, cursor = evaluate(sensor, instance, cursor)
        [request] = result.run_requests
        assert request.job_name == "request_logs_assembly"
        assert request.partition_key_range == dg.PartitionKeyRange("2026-10-03", "2026-10-05")
        assert json.loads(cursor)["assembled_through"]

        # A changed file is noticed again.
        some_file = sorted(settings.inbox.rglob("*.jsonl"))[0]
        some_file.write_text(some_file.read_text() + "\n")
        result, cursor = evaluate(sensor, instance, cursor)
        assert [r.job_name for r in result.run_requests] == ["inbox_staging"]
