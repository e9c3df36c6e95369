"""docs/operations.md and deploy/: what an operator copies from them must be true of the code.

The commands quoted in the doc exist with the flags shown, the schedule hours quoted are the ones
the Definitions get, `deploy/dagster.yaml` is an instance configuration Dagster accepts and means
what the doc says, and the systemd units start programs that take the options they are given.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml

from pipelines.cli import build_parser
from pipelines.definitions import build_definitions
from pipelines.defs.schedules import MAINTENANCE_HOURS_UTC, SAFETY_MARGIN_H, schedule_hour_utc
from pipelines.lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "operations.md"
DEPLOY = REPO / "deploy"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
UNITS = [DEPLOY / "comet-ledger-daemon.service", DEPLOY / "comet-ledger-webserver.service"]
PG_ENV = {"DAGSTER_PG_HOST": "db.example", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
          "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "not-a-secret"}
UTC = ZoneInfo("UTC")


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^\s*```[a-z]*\n(.*?)^\s*```", text, flags=re.S | re.M)


def definitions(tmp_path: Path, **env: str) -> dg.Definitions:
    return build_definitions(load_settings(env={"COMET_LEDGER_HOME": str(tmp_path / "home"), **env}))


# --- the commands -------------------------------------------------------------------------------

def quoted_commands(text: str) -> list[tuple[list[str], bool]]:
    """Every `comet-ledger ...` command in the doc, as (argv, complete): command lines in code
    blocks are complete; inline code in prose may name a command without its required flags."""
    blocks = code_blocks(text)
    prose = re.sub(r"^\s*```[a-z]*\n.*?^\s*```", "", text, flags=re.S | re.M)
    candidates = [(line, True) for block in blocks for line in block.splitlines()]
    candidates += [(span, False) for span in re.findall(r"`([^`\n]+)`", prose)]
    commands = []
    for line, complete in candidates:
        tokens = shlex.split(line, comments=True) if "comet-ledger" in line else []
        if len(tokens) < 2 or not (tokens[0] == "comet-ledger" or tokens[0].endswith("bin/comet-ledger")):
            continue
        argv = []
        for token in tokens[1:]:
            if token in ("||", "&&", ";", "|"):
                break
            argv.append(token)
        commands.append((argv, complete))
    return commands


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_comet_ledger_command_in_the_doc_exists_with_its_flags():
    parser = build_parser()
    subparsers = subcommand_parsers(parser)
    commands = quoted_commands(doc_text())
    problems = []
    for argv, complete in commands:
        if argv[0] not in subparsers:
            problems.append(f"comet-ledger {' '.join(argv)}: no such command")
            continue
        known = {opt for action in subparsers[argv[0]]._actions for opt in action.option_strings}
        for flag in (t.split("=", 1)[0] for t in argv[1:] if t.startswith("--")):
            if flag not in known:
                problems.append(f"comet-ledger {' '.join(argv)}: {argv[0]} has no {flag}")
        if complete and not any("$" in t for t in argv):  # shell variables: checked by name only
            try:
                parser.parse_args(argv)
            except SystemExit:
                problems.append(f"comet-ledger {' '.join(argv)}: the parser refuses it")
    assert not problems, "\n".join(problems)
    # The recipes the doc exists for are all there (and were all found by the parsing above).
    assert {argv[0] for argv, _ in commands} >= {"run", "backfill", "review", "reprice", "smoke-test", "dev"}
    flags = {t for argv, _ in commands for t in argv if t.startswith("--")}
    assert {"--start", "--end", "--restart", "--dry-run", "--date", "--repull", "--month"} <= flags


def test_the_parser_check_catches_a_wrong_flag():
    """The check above would fail on a flag the command does not have."""
    parser = build_parser()
    [(argv, complete)] = quoted_commands("```sh\n.venv/bin/comet-ledger backfill --from 2026-01-01\n```\n")
    assert complete
    known = {opt for action in subcommand_parsers(parser)["backfill"]._actions for opt in action.option_strings}
    assert "--from" not in known
    with pytest.raises(SystemExit):
        parser.parse_args(argv)


def test_the_schedules_and_sensors_the_doc_starts_exist(tmp_path):
    """The doc starts all of them (tests/test_docs_commands.py runs those commands); what it names
    is what the definitions hold."""
    d = definitions(tmp_path)
    text = doc_text()
    assert re.findall(r"dagster (schedule|sensor) start --start-all -w workspace.yaml", text) == ["schedule", "sensor"]
    block = next(b for b in code_blocks(text) if "--start-all" in b)
    named = dict(re.findall(r"dagster (schedule|sensor) start --start-all -w workspace.yaml\s+# (.+)", block))
    assert {n.strip() for n in named["schedule"].split(",")} == {s.name for s in d.schedules}
    assert {n.strip() for n in named["sensor"].split(",")} == {s.name for s in d.sensors}
    listed = set(re.findall(r"^\| `(\w+)` \| ", text[text.index("### What runs when"):], flags=re.M))
    assert listed >= {s.name for s in d.schedules} | {s.name for s in d.sensors}


# --- the schedule hours -------------------------------------------------------------------------

ROW = re.compile(r"^\| `([A-Za-z_/]+)` \| (\d\d:\d\d) \| (\d\d:\d\d) \| (\d\d:\d\d) \| (\d\d:\d\d) \|$", re.M)


def test_the_schedule_hours_quoted_are_the_ones_the_definitions_get(tmp_path):
    rows = ROW.findall(doc_text())
    assert len(rows) >= 5 and "UTC" in {r[0] for r in rows} and "Asia/Shanghai" in {r[0] for r in rows}
    for tz, daily, review, local_january, local_july in rows:
        hour = schedule_hour_utc(tz)
        assert (daily, review) == (f"{hour:02d}:15", f"{hour:02d}:45"), tz
        d = definitions(tmp_path, COMET_LEDGER_TIMEZONE=tz)
        assert d.resolve_schedule_def("daily_ledger_schedule").cron_schedule == f"15 {hour} * * *", tz
        assert d.resolve_schedule_def("monthly_review_schedule").cron_schedule == f"45 {hour} 2 * *", tz
        for month, quoted in ((1, local_january), (7, local_july)):
            local = datetime(2026, month, 15, hour, 15, tzinfo=UTC).astimezone(ZoneInfo(tz))
            assert f"{local:%H:%M}" == quoted, (tz, month)


def test_the_allowed_hours_quoted_follow_from_the_maintenance_windows():
    allowed = {h for h in range(24)
               if not {(h + d) % 24 for d in range(-SAFETY_MARGIN_H, SAFETY_MARGIN_H + 1)} & MAINTENANCE_HOURS_UTC}
    assert allowed == set(range(6, 16)) | {22, 23}
    assert "the hours 06–15 or 22–23 UTC" in " ".join(doc_text().split())


# --- deploy/dagster.yaml ------------------------------------------------------------------------

def instance_config(home: Path) -> dict:
    # Dagster has no public validator; this is the function the daemon and webserver call on
    # $DAGSTER_HOME/dagster.yaml at start. The postgres storage section is part of Dagster's own
    # schema, so it is validated here without a database (tests/deploy/ opens it on a real one).
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(home))
    return config


def test_the_production_instance_config_is_valid(tmp_path, monkeypatch):
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    config = instance_config(tmp_path)
    db = dict(config["storage"]["postgres"]["postgres_db"])
    assert db.pop("scheme") == "postgresql+psycopg2"  # the driver dagster-postgres installs (SQLAlchemy 2.1: psycopg 3)
    assert {field: source["env"] for field, source in db.items()} == {
        "hostname": "DAGSTER_PG_HOST", "port": "DAGSTER_PG_PORT", "db_name": "DAGSTER_PG_DB",
        "username": "DAGSTER_PG_USERNAME", "password": "DAGSTER_PG_PASSWORD"}
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    # Every variable the file needs is in the doc's example .env, and nothing sets a password in clear.
    env_example = next(b for b in code_blocks(doc_text()) if "DAGSTER_PG_HOST=" in b)
    assert all(f"{name}=" in env_example for name in PG_ENV)


def test_the_validation_catches_a_misspelt_key(tmp_path):
    raw = yaml.safe_load(INSTANCE_YAML.read_text())
    raw["run_monitoring"]["free_slot_after_run_end_seconds"] = raw["run_monitoring"].pop("free_slots_after_run_end_seconds")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(dg.DagsterInvalidConfigError):
        instance_config(tmp_path)


def test_the_instance_it_describes_limits_the_writer_pool_to_one(tmp_path):
    """The same file with SQLite instead of Postgres storage, opened as a real instance."""
    raw = yaml.safe_load(INSTANCE_YAML.read_text())
    raw["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(raw))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
        assert instance.run_monitoring_max_runtime_seconds == 21600
        for pool in declared_pools(tmp_path):
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
            assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 1, pool


def declared_pools(tmp_path: Path) -> set[str]:
    graph = definitions(tmp_path).resolve_asset_graph()
    return {a.node_def.pool for a in graph.assets_defs if a.is_executable and a.node_def.pool}


def test_the_pool_in_the_config_is_the_pool_the_assets_declare(tmp_path):
    """`default_limit: 1` limits every pool; it means "duckdb_writer: 1" only while that is the one
    pool. A second pool (say, for API calls) would silently get 1 too: revisit deploy/dagster.yaml."""
    assert declared_pools(tmp_path) == {"duckdb_writer"}
    raw = yaml.safe_load(INSTANCE_YAML.read_text())
    assert raw["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}  # as runs.instance_for writes
    assert "duckdb_writer" in INSTANCE_YAML.read_text()
    assert set(re.findall(r"dagster instance concurrency (?:set|get) (\S+)", doc_text())) == {"duckdb_writer"}


# --- the systemd units and the files the doc points at ------------------------------------------

@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_the_systemd_units_start_programs_that_take_their_options(unit):
    lines = dict(line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#"))
    assert lines["WorkingDirectory"] == "/opt/comet-ledger"
    assert lines["EnvironmentFile"] == "/opt/comet-ledger/.env"
    program, *args = shlex.split(lines["ExecStart"])
    assert program.startswith("/opt/comet-ledger/.venv/bin/")
    local = Path(sys.executable).parent / Path(program).name
    assert local.exists(), f"{Path(program).name} is not installed with the project"
    assert args[args.index("-w") + 1] == "/opt/comet-ledger/workspace.yaml" and (REPO / "workspace.yaml").exists()
    help_args = [a for a in args[:1] if not a.startswith("-")]  # `dagster-daemon run`: the subcommand's help
    usage = subprocess.run([str(local), *help_args, "--help"], capture_output=True, text=True, timeout=120).stdout
    for option in (a for a in args if a.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}[\s,]", usage), f"{unit.name}: {option} not in --help"


def test_every_deploy_file_the_doc_names_exists():
    text = doc_text()
    named = set(re.findall(r"(?<![\w/])deploy/[\w.-]+", text))  # not tests/deploy/
    assert named >= {"deploy/dagster.yaml", "deploy/comet-ledger-daemon.service", "deploy/comet-ledger-webserver.service"}
    assert all((REPO / path).is_file() for path in named), named
    for target in re.findall(r"\]\((\.\./[^)#]+)\)", text):
        assert (DOC.parent / target).resolve().is_file(), target
    tests = set(re.findall(r"tests/[\w/]+\.py", text))  # the tests the doc says prove the recipe
    assert tests and all((REPO / path).is_file() for path in tests), tests


def test_the_readme_leads_to_the_operations_guide_and_a_first_query():
    readme = (REPO / "README.md").read_text()
    order = [readme.index(h) for h in ("\n## Quick start", "\n## The monthly review", "\n## Operations", "\n## Tests")]
    assert order == sorted(order)
    operations = readme[order[2]:order[3]]
    assert "(docs/operations.md)" in operations and "(deploy/)" in operations
    quick_start = readme[order[0]:readme.index("\n## ", order[0] + 1)]
    assert "reconciliation.html" in quick_start and "make dev" in quick_start
    [query] = re.findall(r"(docs/queries/\w+\.sql)", quick_start)
    assert (REPO / query).is_file()
