"""The real Definitions: they load, and the keys, jobs, schedule and time zone are what operators expect."""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from pipelines.definitions import build_definitions, defs
from pipelines.defs.schedules import MAINTENANCE_HOURS_UTC, schedule_hour_utc
from pipelines.lib.settings import load_settings

EXPECTED_ASSETS = {
    "lake/quota_daily", "lake/balance_snapshots", "lake/key_snapshots",
    "warehouse/quota_daily", "warehouse/quota_restatements",
    "warehouse/balance_snapshots", "warehouse/key_snapshots",
    "lake/inbox_files", "lake/request_logs", "lake/gateway_logs", "lake/catalog_snapshots", "warehouse/inbox_files", "warehouse/rejects",
    "warehouse/prices", "warehouse/key_owners", "warehouse/requests", "warehouse/recon_key_daily",
    "warehouse/cost_key_model_daily", "warehouse/cost_model_daily", "warehouse/cost_category_monthly",
    "warehouse/chargeback_monthly", "warehouse/smoke_tests", "warehouse/anomalies", "reports/review_pack",
    "reports/focus_export", "warehouse/budgets", "warehouse/budget_status",
}
EXPECTED_CHECKS = {
    "warehouse/quota_daily:one_row_per_key_day", "warehouse/inbox_files:every_line_accounted_for",
    "warehouse/requests:unique_request_ids", "warehouse/requests:token_invariants", "warehouse/requests:unpriced_share",
    "warehouse/cost_key_model_daily:allocation_sums", "warehouse/recon_key_daily:variance_within_tolerance",
    *(f"warehouse/anomalies:no_{kind}" for kind in ("spend_spike", "new_source_ip", "unlogged_gateway_requests",
                                                     "restatement", "unpriced_model", "balance_jump",
                                                     "price_change")),
    "warehouse/quota_daily:freshness_check", "warehouse/recon_key_daily:freshness_check",
    "warehouse/recon_key_daily:service_day_boundary",
}
EXPECTED_SENSORS = {"inbox_sensor", "freshness_sensor", "alert_sensor", "alert_failure_sensor"}
EXPECTED_SCHEDULES = {"daily_ledger_schedule", "monthly_review_schedule"}


def test_the_monthly_review_schedule_asks_for_last_month(tmp_path):
    d = build_definitions(settings(tmp_path, COMET_LEDGER_START_DATE="2026-01-01"))
    schedule = d.resolve_schedule_def("monthly_review_schedule")
    when = datetime(2026, 3, 2, 6, 45, tzinfo=ZoneInfo("UTC"))
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=d.get_repository_def()) as c:
        [request] = schedule.evaluate_tick(c).run_requests
    assert request.partition_key == "2026-02-01"


def test_every_asset_has_a_description_group_kind_and_owner(tmp_path):
    d = build_definitions(settings(tmp_path))
    for key in d.resolve_all_asset_keys():
        spec = d.resolve_assets_def(key).specs_by_key[key]
        assert spec.description and spec.group_name and spec.kinds and spec.owners, key.to_user_string()


def test_the_reconciliation_models_carry_the_sql_text_as_code_version(tmp_path):
    from pipelines.defs.metadata import code_version
    from pipelines.lib.reconciliation import RECON_MODELS

    d = build_definitions(settings(tmp_path))
    spec = d.resolve_assets_def(dg.AssetKey(["warehouse", "recon_key_daily"])).specs_by_key[
        dg.AssetKey(["warehouse", "recon_key_daily"])]
    assert spec.code_version == code_version(*RECON_MODELS)


def settings(tmp_path, **env):
    return load_settings(env={"COMET_LEDGER_HOME": str(tmp_path), **env})


def asset_keys(d: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in d.resolve_all_asset_keys()}


def test_the_module_entry_point_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("COMET_LEDGER_HOME", str(tmp_path))
    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    assert asset_keys(loaded) == EXPECTED_ASSETS
    graph = loaded.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.asset_check_keys} == EXPECTED_CHECKS
    repository = loaded.get_repository_def()
    assert {s.name for s in repository.sensor_defs} == EXPECTED_SENSORS
    assert {s.name for s in repository.schedule_defs} == EXPECTED_SCHEDULES


def test_the_freshness_checks_run_from_their_sensor_not_from_the_jobs(tmp_path):
    d = build_definitions(settings(tmp_path))
    sensor = d.resolve_sensor_def("freshness_sensor")
    assert sensor.asset_selection is not None and sensor.minimum_interval_seconds == 300
    for job_name in ("daily_ledger", "reconciliation_rebuild"):
        nodes = {node.name for node in d.resolve_job_def(job_name).nodes}
        assert not any(name.startswith("freshness_check") for name in nodes), job_name


def test_partitions_start_date_and_time_zone_come_from_settings(tmp_path):
    d = build_definitions(settings(tmp_path, COMET_LEDGER_START_DATE="2026-02-01", COMET_LEDGER_TIMEZONE="Asia/Shanghai"))
    partitions = d.resolve_assets_def(dg.AssetKey(["lake", "quota_daily"])).partitions_def
    assert partitions.timezone == "Asia/Shanghai"
    assert partitions.get_first_partition_key() == "2026-02-01"
    # 2026-03-10 01:00 in Shanghai: the last complete reporting day there is 03-09.
    now = datetime(2026, 3, 10, 1, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert partitions.get_partition_keys(current_time=now)[-1] == "2026-03-09"


def test_schedule_materialises_yesterday_and_repulls_three_days(tmp_path):
    d = build_definitions(settings(tmp_path, COMET_LEDGER_START_DATE="2026-01-01"))
    schedule = d.resolve_schedule_def("daily_ledger_schedule")
    assert schedule.execution_timezone == "UTC"
    assert schedule.cron_schedule == "15 6 * * *"
    when = datetime(2026, 3, 10, 6, 15, tzinfo=ZoneInfo("UTC"))
    with dg.build_schedule_context(scheduled_execution_time=when) as context:
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("2026-03-06", "2026-03-09")
    assert request.job_name in (None, "daily_ledger")


def test_schedule_near_the_start_date_takes_what_exists(tmp_path):
    d = build_definitions(settings(tmp_path, COMET_LEDGER_START_DATE="2026-03-08"))
    schedule = d.resolve_schedule_def("daily_ledger_schedule")
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 6, 15, tzinfo=ZoneInfo("UTC"))) as c:
        [request] = schedule.evaluate_tick(c).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("2026-03-08", "2026-03-09")


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/Los_Angeles", "Europe/Berlin", "Pacific/Auckland"])
def test_schedule_hour_is_clear_of_both_maintenance_windows(tz):
    hour = schedule_hour_utc(tz)
    assert not {(hour + d) % 24 for d in (-1, 0, 1)} & MAINTENANCE_HOURS_UTC
    # ...and after the reporting day has closed in that zone.
    day_end_utc = datetime(2026, 1, 15, tzinfo=ZoneInfo(tz)).astimezone(ZoneInfo("UTC")).hour
    assert (hour - day_end_utc) % 24 >= 2


def test_warehouse_writers_share_one_pool(tmp_path):
    from pipelines.defs.pools import WRITER_POOL

    assert WRITER_POOL == "duckdb_writer"
    d = build_definitions(settings(tmp_path))
    for key in d.resolve_all_asset_keys():
        assets_def = d.resolve_assets_def(key)
        writes_warehouse = "duckdb" in assets_def.specs_by_key[key].kinds
        # a DuckDB asset writes the warehouse and queues for the pool; nothing else holds it
        assert assets_def.node_def.pool == (WRITER_POOL if writes_warehouse else None), key.to_user_string()


def test_secrets_only_through_envvar(tmp_path, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", "sk-ENVVARCANARY-123456")
    d = build_definitions(settings(tmp_path))
    resource = d.resources["query_service"]
    assert isinstance(resource.api_key, dg.EnvVar)
    assert resource.api_key.env_var_name == "COMETAPI_KEY"


def test_alert_channel_secrets_only_through_envvar(tmp_path):
    secrets = {"COMET_LEDGER_ALERT_SLACK_URL": "https://hooks.example.com/services/T/B/ENVVARCANARY",
               "COMET_LEDGER_ALERT_WEBHOOK_URL": "https://example.com/hook/ENVVARCANARY",
               "COMET_LEDGER_ALERT_SMTP_PASSWORD": "pw-ENVVARCANARY"}
    d = build_definitions(settings(tmp_path, **secrets, COMET_LEDGER_ALERT_SMTP_HOST="smtp.example.com",
                                   COMET_LEDGER_ALERT_SMTP_USER="ledger", COMET_LEDGER_ALERT_SMTP_FROM="a@example.com",
                                   COMET_LEDGER_ALERT_SMTP_TO="b@example.com"))
    channels = d.resources["alert_channels"]
    assert [(f.env_var_name, type(f)) for f in (channels.slack_url, channels.webhook_url, channels.smtp_password)] == [
        (name, dg.EnvVar) for name in secrets]
    assert (channels.smtp_host, channels.smtp_user, channels.smtp_to) == ("smtp.example.com", "ledger", ["b@example.com"])
    assert "ENVVARCANARY" not in repr(channels)
    unset = build_definitions(settings(tmp_path)).resources["alert_channels"]
    assert (unset.slack_url, unset.webhook_url, unset.smtp_host, unset.smtp_password) == (None, None, None, None)


def test_the_alert_sensors_watch_runs_and_are_off_until_started(tmp_path):
    d = build_definitions(settings(tmp_path))
    for name in ("alert_sensor", "alert_failure_sensor"):
        sensor = d.resolve_sensor_def(name)
        assert isinstance(sensor, dg.RunStatusSensorDefinition)
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        assert sensor.required_resource_keys == {"ledger", "alert_channels"}
