"""Lake → DuckDB for the quota service: latest pull wins, restatements, snapshots, windows."""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib import lake
from pipelines.lib.quota import lake as quota_lake
from pipelines.lib.cometapi.query import DailyEntry, DailyPull, KeySnapshot, QuotaResponse
from pipelines.lib.warehouse import publish, run_model

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
T0 = datetime(2026, 3, 4, 7, 0, tzinfo=timezone.utc)


def response(entries, keys=()) -> QuotaResponse:
    return QuotaResponse(
        username="u", balance_usd=Decimal("90.5"), total_used_usd=Decimal("9.5"), request_count=12,
        keys=list(keys), daily=[DailyEntry(usage_date=d, key_name=k, cost_usd=Decimal(c), requests=n)
                                for d, k, c, n in entries],
        raw_sha256="0" * 64,
    )


def pull(first, last, entries, minutes=0) -> DailyPull:
    return DailyPull(first, last, first, last + timedelta(days=1), T0 + timedelta(minutes=minutes), response(entries))


def build(lake_root: Path, wh: Path, start=D1, end=D3) -> None:
    params = quota_lake.model_params(lake_root, start, end)
    with publish(wh) as con:
        for model in ("stg_quota_pulls", "stg_quota_daily", "quota_daily", "quota_restatements"):
            run_model(con, model, params)


def rows(wh: Path, sql: str):
    with duckdb.connect(str(wh), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "lake", tmp_path / "warehouse.duckdb"


def test_latest_pull_per_day_wins_and_changes_are_restatements(home):
    lake_root, wh = home
    quota_lake.land_daily_pull(lake_root, pull(D1, D2, [(D1, "a", "1.500000", 3), (D1, "b", "2", 4), (D2, "a", "0.5", 1)]))
    quota_lake.land_daily_pull(lake_root, pull(D2, D3, [(D2, "a", "0.7", 2), (D2, "c", "0.1", 1)], minutes=5))
    build(lake_root, wh)

    assert rows(wh, "SELECT usage_date, key_name, reported_cost_usd, reported_requests FROM quota_daily ORDER BY ALL") == [
        (D1, "a", Decimal("1.500000"), 3),
        (D1, "b", Decimal("2.000000"), 4),
        (D2, "a", Decimal("0.700000"), 2),
        (D2, "c", Decimal("0.100000"), 1),
    ]
    assert rows(wh, "SELECT usage_date, key_name, previous_cost_usd, new_cost_usd, delta_cost_usd, "
                    "previous_requests, new_requests FROM quota_restatements ORDER BY ALL") == [
        (D2, "a", Decimal("0.5"), Decimal("0.7"), Decimal("0.2"), 1, 2),
        (D2, "c", Decimal("0"), Decimal("0.1"), Decimal("0.1"), 0, 1),
    ]


def test_a_key_dropped_by_a_later_pull_is_restated_to_zero(home):
    lake_root, wh = home
    quota_lake.land_daily_pull(lake_root, pull(D2, D2, [(D2, "a", "0.7", 2), (D2, "c", "0.1", 1)]))
    quota_lake.land_daily_pull(lake_root, pull(D2, D2, [(D2, "c", "0.1", 1)], minutes=9))
    build(lake_root, wh)
    assert rows(wh, "SELECT key_name FROM quota_daily") == [("c",)]
    assert rows(wh, "SELECT key_name, previous_cost_usd, new_cost_usd FROM quota_restatements") == [
        ("a", Decimal("0.7"), Decimal("0"))
    ]


def test_day_files_without_a_pull_record_are_ignored(home):
    lake_root, wh = home
    quota_lake.land_daily_pull(lake_root, pull(D1, D1, [(D1, "a", "1", 1)]))
    # A crash after the day file and before the pull record: an orphan file.
    orphan = pull(D1, D1, [(D1, "a", "999", 9)], minutes=3)
    table = quota_lake.pa.Table.from_pylist(
        [{"usage_date": D1, "key_name": "a", "cost_usd": Decimal("999"), "requests": 9,
          "pull_id": "orphan", "pulled_at": orphan.pulled_at}], schema=quota_lake.QUOTA_DAILY)
    lake.write_partition_file(lake_root, "quota_daily", "usage_date", D1, "orphan", table)
    build(lake_root, wh)
    assert rows(wh, "SELECT reported_cost_usd, reported_requests FROM quota_daily") == [(Decimal("1"), 1)]


def test_rebuild_only_touches_its_window_and_is_idempotent(home):
    lake_root, wh = home
    quota_lake.land_daily_pull(lake_root, pull(D1, D3, [(D1, "a", "1", 1), (D2, "a", "2", 2), (D3, "a", "3", 3)]))
    build(lake_root, wh)
    first = rows(wh, "SELECT * FROM quota_daily ORDER BY ALL")
    # A later pull changes D1 and D3, but only D3's window is rebuilt.
    quota_lake.land_daily_pull(lake_root, pull(D1, D3, [(D1, "a", "10", 1), (D2, "a", "2", 2), (D3, "a", "30", 3)], 1))
    build(lake_root, wh, D3, D3)
    assert rows(wh, "SELECT usage_date, reported_cost_usd FROM quota_daily ORDER BY 1") == [
        (D1, Decimal("1")), (D2, Decimal("2")), (D3, Decimal("30"))]
    build(lake_root, wh)
    again = rows(wh, "SELECT * FROM quota_daily ORDER BY ALL")
    build(lake_root, wh)
    assert rows(wh, "SELECT * FROM quota_daily ORDER BY ALL") == again != first


def test_empty_lake_builds_empty_tables(home):
    lake_root, wh = home
    build(lake_root, wh)
    assert rows(wh, "SELECT count(*) FROM quota_daily") == [(0,)]
    assert rows(wh, "SELECT count(*) FROM quota_restatements") == [(0,)]


def test_snapshots_are_point_in_time_and_sentinels_stay_null(home):
    lake_root, wh = home
    keys = [KeySnapshot(name="lim", remain_quota_usd=Decimal("8.93872"), used_quota_usd=Decimal("2.099206"), is_unlimited=False),
            KeySnapshot(name="unl", remain_quota_usd=None, used_quota_usd=None, is_unlimited=True)]
    quota_lake.land_snapshot(lake_root, response([], keys), T0)
    quota_lake.land_snapshot(lake_root, response([], keys), T0 + timedelta(days=1))
    params = quota_lake.model_params(lake_root)
    with publish(wh) as con:
        run_model(con, "balance_snapshots", params)
        run_model(con, "key_snapshots", params)
    assert rows(wh, "SELECT fetched_at, balance_usd, request_count FROM balance_snapshots ORDER BY 1") == [
        (T0, Decimal("90.5"), 12), (T0 + timedelta(days=1), Decimal("90.5"), 12)]
    assert rows(wh, "SELECT key_name, remain_quota_usd, used_quota_usd, is_unlimited FROM key_snapshots "
                    "WHERE fetched_at = (SELECT min(fetched_at) FROM key_snapshots) ORDER BY 1") == [
        ("lim", Decimal("8.938720"), Decimal("2.099206"), False), ("unl", None, None, True)]


def test_a_failed_build_publishes_nothing(home):
    lake_root, wh = home
    quota_lake.land_daily_pull(lake_root, pull(D1, D1, [(D1, "a", "1", 1)]))
    build(lake_root, wh)
    before = wh.read_bytes()
    with pytest.raises(RuntimeError):
        with publish(wh) as con:
            con.execute("DELETE FROM quota_daily")
            raise RuntimeError("boom")
    assert wh.read_bytes() == before
    assert not wh.with_name(wh.name + ".build").exists()


def test_writers_are_serialised_so_no_update_is_lost(tmp_path):
    import threading
    import time

    wh = tmp_path / "warehouse.duckdb"
    with publish(wh) as con:
        con.execute("CREATE TABLE t (writer INTEGER)")
    inside, overlaps = [], []

    def write(n: int) -> None:
        with publish(wh) as con:
            if inside:
                overlaps.append(n)
            inside.append(n)
            con.execute("INSERT INTO t VALUES ($n)", {"n": n})
            time.sleep(0.2)  # a slow build: the other writer must wait, not copy the old file
            inside.remove(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert rows(wh, "SELECT writer FROM t ORDER BY 1") == [(0,), (1,), (2,), (3,)]
