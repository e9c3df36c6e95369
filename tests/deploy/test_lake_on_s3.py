"""The lake on S3-compatible storage (COMET_LEDGER_LAKE_URL=s3://bucket/prefix), against a real server on
127.0.0.1 (moto in server mode, s3_server.py): the daily job gives the figures it gives on local disk;
a writer killed (SIGKILL) between its data object and its commit leaves nothing visible, and a re-run
converges; storage it cannot use (no server, refused credentials, no bucket) ends in one line, with
nothing landed locally and no secret printed; each published warehouse is copied there, and
`comet-ledger open-latest` opens the latest copy read-only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import materialize_days, outside_libfaketime
from pg_server import free_port
from pipelines.lib import lake
from pipelines.lib.settings import load_settings
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from s3_server import S3Server

REPO = Path(__file__).resolve().parents[2]
FIRST, LAST = date(2026, 10, 1), date(2026, 10, 3)
CANARY = "LEAKCANARY-s3-7f3e9a1c"
FIGURES = {
    "recon": "SELECT usage_date, key_name, reported_cost_usd, round(estimated_cost_usd, 6), billed_cost_usd, status "
             "FROM recon_key_daily ORDER BY ALL",
    "requests": "SELECT count(*), round(sum(estimated_cost_usd), 6), round(sum(billed_cost_usd), 6), "
                "count(DISTINCT seen_in) FROM requests",
    "models": "SELECT usage_date, model, requests, allocated_cost_usd FROM cost_model_daily ORDER BY ALL",
    "rejects": "SELECT source, reason, count(*) FROM rejects GROUP BY ALL ORDER BY ALL",
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("moto")) as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env().items():
            patch.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def homes(s3, traffic, tmp_path_factory):
    """The same three days materialised twice: the lake on local disk, and on the S3 server."""
    root = tmp_path_factory.mktemp("homes")
    with SimulatorServer(traffic) as sim, pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMETAPI_KEY", sim.api_key)
        patch.setenv("COMETAPI_ACCESS_TOKEN", sim.access_token)
        built = {}
        for name, url in (("local", None), ("s3", f"s3://{s3.bucket}/ledger")):
            # this test's simulator wins over whatever the process's environment holds
            env = {**os.environ, "COMET_LEDGER_HOME": str(root / name), "COMETAPI_QUERY_URL": sim.url,
                   "COMETAPI_API_URL": sim.url, "COMETAPI_KEY": sim.api_key, "COMETAPI_ACCESS_TOKEN": sim.access_token,
                   "COMET_LEDGER_START_DATE": "2026-09-01",
                   "COMET_LEDGER_PRICES": str(REPO / "config" / "prices.csv")}
            env = {k: v for k, v in env.items() if k != "COMET_LEDGER_LAKE_URL"} | (
                {"COMET_LEDGER_LAKE_URL": url} if url else {})
            settings = load_settings(env=env)
            write_inbox(traffic, settings.inbox, days=[d for d in traffic.dates if FIRST <= d <= LAST])
            materialize_days(settings, FIRST, LAST)
            built[name] = settings
        yield built


def figures(settings) -> dict[str, list[tuple]]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in FIGURES.items()}


def test_daily_job_on_s3_gives_the_local_figures_and_lands_nothing_on_local_disk(homes, s3):
    local, remote = homes["local"], homes["s3"]
    expected = figures(local)
    assert expected["recon"] and expected["requests"][0][0] > 0
    assert figures(remote) == expected
    assert not (remote.home / "lake").exists()
    commits = s3.keys("ledger/_commits/")
    for dataset in ("quota_daily", "quota_pulls", "request_logs", "gateway_logs", "gateway_pulls", "inbox_manifest",
                    "balance_snapshots"):
        assert any(k.startswith(f"ledger/_commits/{dataset}/") and k.endswith(".json") for k in commits), dataset
    # another machine with an empty cache reads the same committed lake from the server
    fresh = lake.attach(remote.home.parent / "fresh", remote.lake_url)
    rows = pq.read_table(lake.files(fresh, "request_logs"), partitioning=None).num_rows
    assert rows == pq.read_table(lake.files(local.lake, "request_logs"), partitioning=None).num_rows > 0
    assert lake.partition_values(fresh, "quota_daily", "usage_date") == \
        lake.partition_values(local.lake, "quota_daily", "usage_date")


KILLED_WRITER = """
import sys, threading
from pathlib import Path
import pyarrow as pa
from pipelines.lib import lake
from pipelines.lib.lake import store as lake_store

def stop_before_the_commit(self, staged):
    print("uploaded", flush=True)
    threading.Event().wait()  # SIGKILL arrives here: the data object is there, its commit is not

lake_store.ObjectLake.commit = stop_before_the_commit
root = lake.attach(Path(sys.argv[1]), sys.argv[2])
lake.write_partition_file(root, "quota_daily", "usage_date", "2026-10-05", "pull-a", pa.table({"x": [2]}))
"""


def test_a_writer_killed_before_its_commit_leaves_nothing_visible_and_a_rerun_converges(s3, tmp_path):
    url = f"s3://{s3.bucket}/killed"
    root = lake.attach(tmp_path / "writer", url)
    lake.write_partition_file(root, "quota_daily", "usage_date", "2026-10-05", "pull-a", pa.table({"x": [1]}))
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "child"), url], cwd=REPO,
                             env=outside_libfaketime(dict(os.environ)), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "uploaded"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    data = [k for k in s3.keys("killed/quota_daily/") if k.endswith(".parquet")]
    assert len(data) == 2  # the committed version and the killed writer's orphan

    reader = lake.attach(tmp_path / "reader", url)  # an empty cache: everything read comes from the server
    [visible] = lake.files(reader, "quota_daily")
    assert pq.read_table(visible, partitioning=None)["x"].to_pylist() == [1]

    lake.write_partition_file(root, "quota_daily", "usage_date", "2026-10-05", "pull-a", pa.table({"x": [3]}))
    [visible] = lake.files(reader, "quota_daily")
    assert pq.read_table(visible, partitioning=None)["x"].to_pylist() == [3]
    assert len(s3.keys("killed/_commits/quota_daily/usage_date=2026-10-05/pull-a.parquet/")) <= 2  # one record
    assert len([k for k in s3.keys("killed/_commits/") if k.endswith(".json")]) == 1

    removed = lake.object_lake(root).sweep(["quota_daily"], kept_s=0)
    assert len(removed) == 2  # the orphan and the replaced version
    assert [k for k in s3.keys("killed/quota_daily/") if k.endswith(".parquet")] == \
        [f"killed/{Path(visible).relative_to(reader).as_posix()}"]
    assert [p.name for p in (root / "quota_daily").rglob("*.parquet")] == [Path(visible).name]  # the writer's cache


def run_cli(root: Path, lake_env: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "AWS_", "DAGSTER_"))}
    env |= {
        "COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"],
        "COMET_LEDGER_HOME": str(root / "home"),
        "DAGSTER_HOME": str(root / "dagster"),
        "COMETAPI_KEY": "sk-test-never-sent",
        "COMETAPI_QUERY_URL": "http://127.0.0.1:9",  # never reached: the lake is checked first
        "COMET_LEDGER_START_DATE": "2026-09-01",
        "COMET_LEDGER_PRICES": str(REPO / "config" / "prices.csv"),
        "COMET_LEDGER_KEY_OWNERS": str(REPO / "config" / "key_owners.csv"),
        **lake_env,
    }
    root.mkdir(parents=True)
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--date", "2026-10-02", "--repull", "0"],
                            cwd=root, env=outside_libfaketime(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_storage_it_cannot_use_ends_in_one_line_with_nothing_landed_and_no_secret(s3, tmp_path):
    cases = {
        "no server": ({"COMET_LEDGER_LAKE_URL": f"s3://{s3.bucket}/ledger"}
                      | s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"), "cannot be reached"),
        "wrong secret": ({"COMET_LEDGER_LAKE_URL": f"s3://{s3.bucket}/ledger"}
                         | s3.env(AWS_SECRET_ACCESS_KEY=CANARY), "the credentials were refused"),
        "no bucket": ({"COMET_LEDGER_LAKE_URL": "s3://no-such-bucket/ledger"} | s3.env(),
                      "bucket 'no-such-bucket' does not exist"),
    }
    started = {name: run_cli(tmp_path / name.replace(" ", "-"), env) for name, (env, _) in cases.items()}
    for name, process in started.items():
        out, err = process.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert process.returncode == 1, (name, err)
        assert len(lines) == 1 and lines[0].startswith("comet-ledger: error: COMET_LEDGER_LAKE_URL=s3://"), (name, err)
        assert cases[name][1] in lines[0], (name, lines[0])
        assert CANARY not in out + err and s3.secret_key not in out + err
        home = tmp_path / name.replace(" ", "-") / "home"
        assert not (home / "warehouse.duckdb").exists()
        assert not list(home.rglob("*.parquet"))


def test_each_publish_is_copied_and_open_latest_opens_the_last_one_read_only(homes, s3, tmp_path, monkeypatch, capsys):
    from pipelines import cli

    remote = homes["s3"]
    versions = {k.split("/")[3] for k in s3.keys("ledger/_warehouse/versions/")}
    assert len(versions) >= 6  # a daily run publishes once per warehouse asset
    monkeypatch.setenv("COMET_LEDGER_HOME", str(tmp_path / "analyst"))
    monkeypatch.setenv("COMET_LEDGER_LAKE_URL", remote.lake_url)
    query = "SELECT count(*), round(sum(estimated_cost_usd), 6) FROM requests"  # a DOUBLE sum: order-free
    assert cli.main(["open-latest", "--to", str(tmp_path / "copy"), "--sql", query]) == 0
    out = capsys.readouterr()
    with duckdb.connect(str(remote.warehouse_path), read_only=True) as con:
        count, total = con.execute(query).fetchone()
    assert out.out.strip() == f"{count}\t{total}"
    assert max(versions) in out.err and s3.secret_key not in out.out + out.err
    copy = tmp_path / "copy" / "warehouse.duckdb"
    assert figures(type("Home", (), {"warehouse_path": copy})) == figures(remote)
    with pytest.raises(duckdb.Error):  # the copy is opened read-only: nothing writes it back
        with duckdb.connect(str(copy), read_only=True) as con:
            con.execute("CREATE TABLE scribble (x INTEGER)")
