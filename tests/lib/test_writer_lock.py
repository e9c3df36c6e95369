"""The warehouse's writer lock (`warehouse.writer_lock`, an flock through `filelock`): one writer at
a time, a waiting writer gives up after its timeout with one line naming the lock, and the lock is a
plain flock on `<warehouse>.lock`, so a writer of an earlier version (fcntl.flock on the same file)
and this one exclude each other."""

import fcntl
import re

import pytest

from pipelines.lib.warehouse import publish, writer_lock


def test_a_second_writer_times_out_with_one_line_naming_the_lock_and_gets_it_once_released(tmp_path):
    warehouse = tmp_path / "home" / "warehouse.duckdb"
    lock = warehouse.with_name("warehouse.duckdb.lock")
    with writer_lock(warehouse):
        with pytest.raises(TimeoutError) as held:
            with writer_lock(warehouse, timeout_s=0):
                pytest.fail("two writers held the lock at once")
        assert str(held.value) == f"another writer held {lock} for more than 0 s"
        with pytest.raises(TimeoutError, match=re.escape(str(lock))):
            with publish(warehouse, timeout_s=0):
                pytest.fail("a publish ran while another writer held the lock")
    entered = []
    with writer_lock(warehouse, timeout_s=0):
        entered.append(True)
    assert entered == [True] and lock.is_file() and not warehouse.exists()


def test_a_plain_flock_on_the_lock_file_excludes_a_writer_and_the_reverse(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    lock = tmp_path / "warehouse.duckdb.lock"
    with open(lock, "a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(TimeoutError, match="another writer held"):
            with writer_lock(warehouse, timeout_s=0):
                pass
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
        with writer_lock(warehouse, timeout_s=0):
            with pytest.raises(BlockingIOError):
                fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving
