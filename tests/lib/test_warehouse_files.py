"""Day files: `requests` kept as one Parquet file per reporting day beside warehouse.duckdb.

What must keep holding (pipelines/lib/warehouse/__init__.py): the swap publishes the file list and the view
together; a file is named by its content and never overwritten with other bytes; a session that
opened the old view keeps reading it; unlisted files go only after a grace period; a dry run
(`scratch`) writes nothing beside the published warehouse; a moved home heals on the next publish;
the uniqueness check sees a request id on another day, reading only days whose id range overlaps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import tree_digest
from pipelines.lib.reconciliation import window_checks
from pipelines.lib.warehouse import (
    collect_garbage,
    day_files,
    files_root,
    model_path,
    model_sha,
    publish,
    record_models,
    relation_exists,
    replace_days,
    reset_models,
    scratch,
    stale_models,
    window_to_build,
)

D1 = date(2026, 3, 1)


def day(n: int) -> date:
    return D1 + timedelta(days=n - 1)


def window_rows(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, date, str]]) -> None:
    """`requests_window` (the requests model's temporary table, real schema) holding (id, day, team) rows."""
    for statement in con.extract_statements(model_path("requests").read_text()):
        if statement.type == duckdb.StatementType.CREATE:
            con.execute(statement)
    for request_id, usage_date, team in rows:
        ts = datetime.combine(usage_date, datetime.min.time(), UTC) + timedelta(hours=1)
        con.execute("INSERT INTO requests_window (request_id, ts, usage_date, team, pricing_status, seen_in) "
                    "VALUES ($id, $ts, $d, $team, 'priced', 'both')", {"id": request_id, "ts": ts, "d": usage_date,
                                                                        "team": team})


def build(path: Path, rows: list[tuple[str, date, str]], start: date, end: date) -> dict[date, int]:
    with publish(path) as con:
        window_rows(con, rows)
        return replace_days(con, "requests", "requests_window", start, end, order_by="ts, request_id",
                            key="request_id")


def read(path: Path, sql: str = "SELECT request_id, usage_date, team FROM requests ORDER BY ALL") -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def listed(path: Path) -> list[tuple]:
    return read(path, "SELECT usage_date, file, rows, first_key, last_key FROM warehouse_files ORDER BY ALL")


def test_one_file_per_day_named_by_content_and_a_view_over_them(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    written = build(path, [("202603010001aa", day(1), "a"), ("202603010002bb", day(1), "b"),
                           ("202603020001cc", day(2), "a")], day(1), day(3))
    assert written == {day(1): 2, day(2): 1}  # day 3 has no rows: no file
    assert read(path) == [("202603010001aa", day(1), "a"), ("202603010002bb", day(1), "b"),
                          ("202603020001cc", day(2), "a")]
    files = listed(path)
    assert [(d, rows, first, last) for d, _, rows, first, last in files] == [
        (day(1), 2, "202603010001aa", "202603010002bb"), (day(2), 1, "202603020001cc", "202603020001cc")]
    for usage_date, file, *_ in files:
        assert file.startswith(f"requests/usage_date={usage_date}/") and (files_root(path) / file).is_file()
    # the view and its columns carry their descriptions
    assert read(path, "SELECT comment FROM duckdb_views() WHERE view_name = 'requests'")[0][0]
    assert read(path, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'requests' AND comment IS NULL") == [(0,)]

    # the same rows again: the same files, nothing new written
    before = tree_digest(files_root(path))
    build(path, [("202603010001aa", day(1), "a"), ("202603010002bb", day(1), "b")], day(1), day(1))
    assert listed(path) == files and tree_digest(files_root(path)) == before


def test_no_requests_at_all_is_an_empty_view_with_every_column(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    assert build(path, [], day(1), day(2)) == {}
    assert read(path) == [] and listed(path) == []
    columns = read(path, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'requests' "
                         "ORDER BY column_index")
    assert columns[:3] == [("request_id", "VARCHAR"), ("ts", "TIMESTAMP WITH TIME ZONE"), ("usage_date", "DATE")]
    assert ("billed_cost_usd", "DECIMAL(18,6)") in columns
    build(path, [("1", day(1), "a")], day(1), day(1))
    assert read(path) == [("1", day(1), "a")]


def test_a_window_replaces_only_its_days_and_an_empty_day_loses_its_file(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a"), ("2", day(2), "a"), ("3", day(3), "a")], day(1), day(3))
    old = {d: f for d, f, *_ in listed(path)}
    build(path, [("2", day(2), "changed")], day(2), day(3))  # day 3 now has no rows
    assert read(path) == [("1", day(1), "a"), ("2", day(2), "changed")]
    new = {d: f for d, f, *_ in listed(path)}
    assert new[day(1)] == old[day(1)] and new[day(2)] != old[day(2)] and day(3) not in new
    assert (files_root(path) / old[day(2)]).is_file()  # unlisted, kept for sessions that opened the old view


HOLD_OPEN = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    query = "SELECT string_agg(team, ',' ORDER BY request_id) FROM requests"
    print(con.execute(query).fetchone()[0], flush=True)
    sys.stdin.readline()
    print(con.execute(query).fetchone()[0], flush=True)
    con.close()
    print(duckdb.connect(sys.argv[1], read_only=True).execute(query).fetchone()[0], flush=True)
    """
)


def test_a_session_holding_the_old_view_keeps_reading_it_across_a_publish(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "old"), ("2", day(2), "old")], day(1), day(2))
    analyst = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert analyst.stdout.readline().strip() == "old,old"
    build(path, [("1", day(1), "new")], day(1), day(2))
    analyst.stdin.write("\n")
    analyst.stdin.flush()
    assert analyst.stdout.readline().strip() == "old,old"  # its view, its files: as published to it
    assert analyst.stdout.readline().strip() == "new"  # a new session sees the new day files
    assert analyst.wait(timeout=30) == 0


def test_a_failed_build_publishes_nothing_and_its_files_are_collected_later(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a")], day(1), day(1))
    published, files = path.read_bytes(), listed(path)
    with pytest.raises(RuntimeError, match="boom"), publish(path) as con:
        window_rows(con, [("1", day(1), "b")])
        replace_days(con, "requests", "requests_window", day(1), day(1), order_by="ts", key="request_id")
        raise RuntimeError("boom")
    assert path.read_bytes() == published and read(path) == [("1", day(1), "a")] and listed(path) == files
    orphan = [p for p in files_root(path).rglob("*.parquet") if str(p.relative_to(files_root(path))) != files[0][1]]
    assert len(orphan) == 1  # written by the failed build, listed by nothing

    with publish(path) as con:  # not yet: a day of grace
        assert collect_garbage(con, files_root(path)) == []
    old = orphan[0].stat().st_mtime - 2 * 24 * 3600  # on the file system's clock, whatever the process's says
    os.utime(orphan[0], (old, old))
    os.utime(files_root(path) / files[0][1], (old, old))  # listed: kept however old
    build(path, [("2", day(2), "a")], day(2), day(2))  # a writer of day files collects first
    assert not orphan[0].exists() and (files_root(path) / files[0][1]).is_file()
    assert read(path) == [("1", day(1), "a"), ("2", day(2), "a")]


def test_a_retired_file_is_kept_for_a_day_after_it_was_last_listed(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a")], day(1), day(1))
    [(_, old_file, *_)] = listed(path)
    long_ago = (files_root(path) / old_file).stat().st_mtime - 30 * 24 * 3600
    os.utime(files_root(path) / old_file, (long_ago, long_ago))  # written a month ago
    build(path, [("1", day(1), "b")], day(1), day(1))  # retired now
    with publish(path) as con:
        assert collect_garbage(con, files_root(path)) == []
        assert [p.name for p in collect_garbage(con, files_root(path), kept_s=0)] == [Path(old_file).name]


def test_a_dry_run_writes_nothing_beside_the_published_warehouse(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a"), ("2", day(2), "a")], day(1), day(2))
    before, published = tree_digest(tmp_path), path.read_bytes()
    with scratch(path) as con:
        window_rows(con, [("1", day(1), "dry")])
        replace_days(con, "requests", "requests_window", day(1), day(1), order_by="ts", key="request_id")
        # the rewritten day from the scratch folder, the other from the published files
        assert con.execute("SELECT request_id, team FROM requests ORDER BY 1").fetchall() == [("1", "dry"), ("2", "a")]
    assert tree_digest(tmp_path) == before and path.read_bytes() == published


def test_a_moved_home_is_healed_by_the_next_publish(tmp_path):
    path = tmp_path / "home" / "warehouse.duckdb"
    build(path, [("1", day(1), "a")], day(1), day(1))
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "home", moved)
    with pytest.raises(duckdb.IOException):  # the view still names the old folder
        read(moved / "warehouse.duckdb")
    with publish(moved / "warehouse.duckdb"):
        pass
    assert read(moved / "warehouse.duckdb") == [("1", day(1), "a")]


def test_a_lost_day_file_is_unlisted_and_its_table_marked_for_a_whole_history_rebuild(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a"), ("2", day(2), "a")], day(1), day(2))
    with publish(path) as con:
        con.execute("CREATE TABLE model_versions (model VARCHAR PRIMARY KEY, sql_sha256 VARCHAR, built_at TIMESTAMPTZ)")
        con.execute("INSERT INTO model_versions VALUES ('requests', $sha, now())",
                    {"sha": model_sha("requests")})
        assert stale_models(con, ("requests",)) == []
    (files_root(path) / listed(path)[0][1]).unlink()  # day 1's file is gone
    with publish(path) as con:  # any writer notices
        assert stale_models(con, ("requests",)) == ["requests"]  # the reconciliation rebuilds everything
    assert [d for d, *_ in listed(path)] == [day(2)] and read(path) == [("2", day(2), "a")]


def test_changed_requests_sql_drops_the_view_and_its_list(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    build(path, [("1", day(1), "a")], day(1), day(1))
    with publish(path) as con:
        con.execute("CREATE TABLE IF NOT EXISTS model_versions (model VARCHAR PRIMARY KEY, sql_sha256 VARCHAR, "
                    "built_at TIMESTAMPTZ)")
        con.execute("INSERT INTO model_versions VALUES ('requests', 'older', now())")
        assert stale_models(con, ("requests",)) == ["requests"]
        reset_models(con, ("requests",))
    assert read(path, "SELECT count(*) FROM duckdb_views() WHERE view_name = 'requests'") == [(0,)]
    assert listed(path) == []


def test_a_stale_table_drops_its_group_and_widens_the_run_to_the_whole_history(tmp_path):
    names = ("quota_daily", "quota_restatements")
    asked = []

    def history() -> tuple[date, date]:
        asked.append(True)
        return day(1), day(9)

    with publish(tmp_path / "warehouse.duckdb") as con:
        for name in names:
            con.execute(f"CREATE TABLE {name} (usage_date DATE)")
        record_models(con, names)
        assert window_to_build(con, names, day(3), day(4), history) == (day(3), day(4), False)
        assert asked == []  # the lake is not listed when nothing is stale
        con.execute("UPDATE model_versions SET sql_sha256 = 'older' WHERE model = 'quota_daily'")
        assert window_to_build(con, names, day(3), day(12), history) == (day(1), day(12), True)
        assert [relation_exists(con, name) for name in names] == [False, False]  # both rebuilt from the lake
        con.execute("CREATE TABLE quota_daily (usage_date DATE)")  # not recorded: built by unknown SQL
        assert window_to_build(con, names, day(3), day(4), lambda: None) == (day(3), day(4), True)  # nothing landed


def test_the_uniqueness_check_sees_an_id_on_another_day_and_reads_only_days_it_can_be_on(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    rows = [(f"2026030{n}{i:04d}", day(n), "a") for n in range(1, 6) for i in range(3)]
    build(path, rows, day(1), day(5))
    with publish(path) as con:
        con.execute("CREATE TABLE quota_daily (usage_date DATE, key_name VARCHAR, reported_cost_usd DECIMAL(18, 6))")
        con.execute("CREATE TABLE cost_key_model_daily (usage_date DATE, key_name VARCHAR, "
                    "allocated_cost_usd DECIMAL(18, 6))")
        con.execute("CREATE TABLE recon_key_daily (usage_date DATE, status VARCHAR, is_flagged BOOLEAN)")
        assert window_checks(con, day(5), day(5)).duplicate_request_ids == 0
        # time-prefixed ids: day 5's ids can only be on day 5
        assert day_files(con, "requests", key_from="202603050000", key_to="202603050002", outside=(day(5), day(5))) == []
        # day 5 rebuilt with an id of day 2 among its own (e.g. a request moved days between runs)
        window_rows(con, [("202603050000", day(5), "a"), ("202603020001", day(5), "a")])
        replace_days(con, "requests", "requests_window", day(5), day(5), order_by="request_id", key="request_id")
        candidates = day_files(con, "requests", key_from="202603020001", key_to="202603050000",
                               outside=(day(5), day(5)))
        assert [Path(f).parent.name for f in candidates] == [f"usage_date={day(n)}" for n in (2, 3, 4)]
        assert window_checks(con, day(5), day(5)).duplicate_request_ids == 1
        # and twice within the window
        window_rows(con, [("202603050000", day(5), "a"), ("202603050000", day(5), "b")])
        replace_days(con, "requests", "requests_window", day(5), day(5), order_by="team", key="request_id")
        assert window_checks(con, day(5), day(5)).duplicate_request_ids == 1
