"""An analyst's read-only connection and the pipeline's writes do not get in each other's way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta

from conftest import SIM_DAYS, SIM_START, materialize_days, table_rows

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)

HOLD_OPEN = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    first = con.execute("SELECT count(*), sum(reported_cost_usd) FROM quota_daily").fetchone()
    print("opened", flush=True)
    sys.stdin.readline()  # hold the connection until told
    again = con.execute("SELECT count(*), sum(reported_cost_usd) FROM quota_daily").fetchone()
    print("same" if again == first else "changed", first[0], flush=True)
    con.close()
    fresh = duckdb.connect(sys.argv[1], read_only=True)
    print("fresh", fresh.execute("SELECT count(*) FROM quota_daily").fetchone()[0], flush=True)
    """
)

POLL = textwrap.dedent(
    """
    import sys, time, duckdb
    deadline, reads = time.time() + float(sys.argv[2]), 0
    while time.time() < deadline:
        with duckdb.connect(sys.argv[1], read_only=True) as con:
            con.execute("SELECT count(*) FROM quota_daily").fetchone()
        reads += 1
    print(reads, flush=True)
    """
)


def test_a_held_read_only_connection_neither_fails_nor_blocks_a_run(settings, sim):
    materialize_days(settings, SIM_START, SIM_START + timedelta(days=9))
    analyst = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(settings.warehouse_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert analyst.stdout.readline().strip() == "opened"
    # The pipeline runs to completion while the analyst holds the file open...
    assert materialize_days(settings, SIM_START, LAST).success
    analyst.stdin.write("\n")
    analyst.stdin.flush()
    # ...the analyst's session keeps its consistent view, and a new session sees the new data.
    assert analyst.stdout.readline().split()[0] == "same"
    total_rows = table_rows(settings, "SELECT count(*) FROM quota_daily")[0][0]
    assert analyst.stdout.readline().split() == ["fresh", str(total_rows)]
    assert analyst.wait(timeout=30) == 0


def test_readers_polling_during_runs_never_fail(settings, sim):
    materialize_days(settings, SIM_START, SIM_START)
    poller = subprocess.Popen([sys.executable, "-c", POLL, str(settings.warehouse_path), "6"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    runs = 0
    while time.monotonic() - started < 5:
        assert materialize_days(settings, SIM_START, LAST).success
        runs += 1
    out, err = poller.communicate(timeout=60)
    assert poller.returncode == 0, err
    assert int(out) > 0 and runs >= 1
