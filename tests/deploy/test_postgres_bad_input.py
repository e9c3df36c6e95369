"""`comet-ledger` against a PostgreSQL-backed Dagster instance (deploy/dagster.yaml) it cannot use: a
database nobody listens for, a wrong password, a password variable not set, a port that is not a
number, dagster-postgres missing. Each ends in one line naming the instance file and the reason,
exit status 1, nothing landed in COMET_LEDGER_HOME, and the password printed nowhere. The daemon,
started on a database nobody listens for, exits (for systemd to start it again) without printing
the password either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pg_server import Database, PostgresMissing, PostgresServer, free_port

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pg-LEAKCANARY-5d0c77e2a9f1"
CANARY = "LEAKCANARY"
DAY = "2026-10-02"


@pytest.fixture(scope="module")
def database():
    try:
        server = PostgresServer()
    except PostgresMissing as exc:  # never skipped: CI installs the server
        pytest.fail(str(exc))
    with server:
        yield server.create_database("dagster", "dagster", PASSWORD)


def start_run(root: Path, pg: dict[str, str]) -> subprocess.Popen:
    """`comet-ledger run` for one day, its instance deploy/dagster.yaml with the given DAGSTER_PG_* variables."""
    (root / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))}
    env |= {
        "COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"],
        "COMET_LEDGER_HOME": str(root / "home"),
        "DAGSTER_HOME": str(root / "dagster"),
        "COMETAPI_KEY": "sk-test-never-sent",
        "COMETAPI_QUERY_URL": "http://127.0.0.1:9",  # never reached: the instance is opened first
        "COMET_LEDGER_START_DATE": "2026-09-01",
        "COMET_LEDGER_PRICES": str(REPO / "config" / "prices.csv"),
        "COMET_LEDGER_KEY_OWNERS": str(REPO / "config" / "key_owners.csv"),
        **pg,
    }
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--date", DAY, "--repull", "0"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_daemon(root: Path, pg: dict[str, str]) -> subprocess.Popen:
    """`dagster-daemon run -w workspace.yaml` on deploy/dagster.yaml, as deploy/comet-ledger-daemon.service runs it."""
    (root / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))}
    env |= {"DAGSTER_HOME": str(root / "dagster"), "COMET_LEDGER_HOME": str(root / "home"), **pg}
    return subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                             str(REPO / "workspace.yaml")], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def pg_env(db: Database, **changes: str) -> dict[str, str]:
    return {"DAGSTER_PG_HOST": db.host, "DAGSTER_PG_PORT": str(db.port), "DAGSTER_PG_DB": db.name,
            "DAGSTER_PG_USERNAME": db.user, "DAGSTER_PG_PASSWORD": db.password, **changes}


def test_a_database_it_cannot_use_is_one_line_and_nothing_lands(tmp_path, database):
    closed = Database("127.0.0.1", free_port(), "dagster", "dagster", PASSWORD)  # nothing listens there
    unset = pg_env(database)
    del unset["DAGSTER_PG_PASSWORD"]
    cases = {  # the case: (DAGSTER_PG_* variables, the reason after "comet-ledger: error: ", as a pattern)
        "unreachable": (pg_env(closed), r"cannot open Dagster's database as {config} configures it: connection to "
                        rf'server at "127\.0\.0\.1", port {closed.port} failed: Connection refused'),
        "wrong password": (pg_env(database, DAGSTER_PG_PASSWORD=PASSWORD + "-wrong"),
                           r"cannot open Dagster's database as {config} configures it: connection to server at "
                           rf'"127\.0\.0\.1", port {database.port} failed: FATAL:  password authentication failed '
                           r'for user "dagster"'),
        "password not set": (unset, r"{config} reads DAGSTER_PG_PASSWORD from the environment, and it is not set"),
    }
    # All at once: Dagster retries a failed connection for ~12 s before it gives up.
    started = {case: start_run(tmp_path / case.replace(" ", "-"), pg) for case, (pg, _) in cases.items()}
    daemon = start_daemon(tmp_path / "daemon", pg_env(closed))
    for case, process in started.items():
        out, err = process.communicate(timeout=180)
        root = tmp_path / case.replace(" ", "-")
        reason = cases[case][1].format(config=re.escape(str(root / "dagster" / "dagster.yaml")))
        assert process.returncode == 1, (case, err)
        assert out == "", case
        lines = err.strip().splitlines()
        assert lines[0] == f"materialising {DAY} .. {DAY} (re-pulling 0 earlier day(s))", (case, err)
        assert len(lines) == 2, (case, err)  # no retry warnings, no traceback
        assert re.fullmatch(f"comet-ledger: error: {reason}", lines[1]), (case, lines[1])
        assert CANARY not in out + err, case
        landed = [p for p in (root / "home").rglob("*") if p.is_file()]
        assert landed == [], (case, landed)
    assert database.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]  # no table made
    # The daemon, as its unit starts it, gives up and exits (systemd starts it again), password unprinted.
    log, _ = daemon.communicate(timeout=180)
    assert daemon.returncode == 1, log[-3000:]
    assert "DagsterPostgresException: too many retries for DB connection" in log
    assert f'port {closed.port} failed: Connection refused' in log
    assert CANARY not in log


def open_production_instance(tmp_path: Path, monkeypatch, **pg: str):
    """runs.open_instance on deploy/dagster.yaml, in this process, with the given DAGSTER_PG_* variables."""
    from pipelines import runs

    shutil.copy(REPO / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    for name, value in pg.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(runs.InstanceUnavailable) as failure:
        runs.open_instance(tmp_path / "dagster.yaml").dispose()
    return str(failure.value)


def test_a_variable_that_is_not_valid_is_named(tmp_path, monkeypatch):
    pg = pg_env(Database("127.0.0.1", free_port(), "dagster", "dagster", PASSWORD), DAGSTER_PG_PORT="5432x")
    assert open_production_instance(tmp_path, monkeypatch, **pg) == (
        f"{tmp_path / 'dagster.yaml'} is not a valid Dagster instance configuration: "
        'Value stored in env variable "DAGSTER_PG_PORT" cannot be coerced into an int.')


def test_postgres_storage_without_dagster_postgres_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster_postgres", None)  # as if it were not installed
    pg = pg_env(Database("127.0.0.1", free_port(), "dagster", "dagster", PASSWORD))
    assert open_production_instance(tmp_path, monkeypatch, **pg) == (
        f"{tmp_path / 'dagster.yaml'} keeps Dagster's records in PostgreSQL and dagster-postgres is not installed: "
        "pip install -e '.[postgres]'")
