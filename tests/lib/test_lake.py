"""lake.made_then_written: items made in order, each written while the next is made."""

from __future__ import annotations

import threading

import pytest

from pipelines.lib.lake import made_then_written


def test_every_item_is_written_in_order_while_the_next_one_is_made():
    being_made: dict[int, threading.Event] = {i: threading.Event() for i in range(5)}
    events: list[str] = []

    def make(i: int) -> str:
        being_made[i].set()
        events.append(f"make {i}")
        return f"rows of {i}"

    def write(i: int, made: str) -> int:
        if i + 1 in being_made:  # run one after the other, the next item would not be made yet
            assert being_made[i + 1].wait(timeout=30), f"item {i + 1} was not made while {i} was written"
        events.append(f"write {i}")
        return len(made) * 10 + i

    assert made_then_written(range(5), make, write) == [len(f"rows of {i}") * 10 + i for i in range(5)]
    assert [e for e in events if e.startswith("write")] == [f"write {i}" for i in range(5)]
    assert [e for e in events if e.startswith("make")] == [f"make {i}" for i in range(5)]


def test_a_failed_write_stops_the_writes_after_it_and_is_raised():
    written = []

    def write(i: int, made: int) -> int:
        if i == 2:
            raise OSError("disk full")
        written.append(i)
        return made

    with pytest.raises(OSError, match="disk full"):
        made_then_written(range(6), lambda i: i, write)
    assert written == [0, 1]


def test_a_failed_make_lets_the_write_under_way_finish_then_is_raised():
    written = []

    def make(i: int) -> int:
        if i == 3:
            raise ValueError("bad day")
        return i

    with pytest.raises(ValueError, match="bad day"):
        made_then_written(range(6), make, lambda i, made: written.append(i))
    assert written == [0, 1, 2]


def test_no_items_writes_nothing():
    assert made_then_written([], lambda i: i, lambda i, made: made) == []


def test_only_hidden_temporaries_older_than_a_day_are_removed(tmp_path):
    import os

    from pipelines.lib.lake import STALE_TEMPORARY_S, remove_stale_temporaries

    day = tmp_path / "gateway_logs" / "utc_date=2026-01-01"
    day.mkdir(parents=True)
    now = 1_800_000_000.0
    files = {
        "old": day / ".ledger.parquet.1f2e.tmp",  # left by a killed pull two days ago
        "young": day / ".ledger.parquet.3c4d.tmp",  # a pull at work an hour ago
        "published": day / "ledger.parquet",
        "other_dataset": tmp_path / "request_logs" / "utc_date=2026-01-01" / ".requests.parquet.5e6f.tmp",
    }
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        age = 2 * STALE_TEMPORARY_S if name != "young" else 3600
        os.utime(path, (now - age, now - age))
    assert remove_stale_temporaries(tmp_path, ["gateway_logs"], now=now) == [files["old"]]
    assert not files["old"].exists()
    assert all(files[n].exists() for n in ("young", "published", "other_dataset"))
