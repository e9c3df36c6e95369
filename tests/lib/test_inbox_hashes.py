"""request_log_lake.pending_files hashes a file once per version, not once per run."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pipelines.lib import clock
from pipelines.lib.request_logs import lake as request_log_lake

LINE = b'{"request_id": "r-%d", "ts": "2026-10-01T00:00:00Z", "key_name": "k", "model": "m", "response": {}}\n'


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The inbox-relative names of the files hashed, in order."""
    seen: list[str] = []
    real = request_log_lake.file_fingerprint

    def counting(path: Path) -> str:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(request_log_lake, "file_fingerprint", counting)
    return seen


def write(path: Path, lines: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(LINE % i for i in lines))


def test_an_unchanged_file_is_hashed_once_and_a_changed_one_again(tmp_path, hashed):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    write(inbox / "team" / "a.jsonl", range(3))
    write(inbox / "team" / "b.jsonl", range(3, 6))
    first = request_log_lake.pending_files(lake, inbox)
    assert sorted(hashed) == ["a.jsonl", "b.jsonl"]
    assert {f.relative: f.content_sha256 for f in first} == {
        f"team/{n}": hashlib.sha256((inbox / "team" / n).read_bytes()).hexdigest() for n in ("a.jsonl", "b.jsonl")}

    hashed.clear()
    assert request_log_lake.pending_files(lake, inbox) == first  # nothing staged yet: both still pending
    assert hashed == []

    # b rewritten with other bytes of the same size, its mtime set back: its ctime moved, so it is read again
    stat = (inbox / "team" / "b.jsonl").stat()
    write(inbox / "team" / "b.jsonl", range(7, 10))
    os.utime(inbox / "team" / "b.jsonl", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (inbox / "team" / "b.jsonl").stat().st_size == stat.st_size
    write(inbox / "team" / "c.jsonl", range(10, 12))
    third = {f.relative: f.content_sha256 for f in request_log_lake.pending_files(lake, inbox)}
    assert sorted(hashed) == ["b.jsonl", "c.jsonl"]
    assert third["team/b.jsonl"] == hashlib.sha256((inbox / "team" / "b.jsonl").read_bytes()).hexdigest()
    assert third["team/b.jsonl"] != {f.relative: f.content_sha256 for f in first}["team/b.jsonl"]


def test_a_lost_or_damaged_cache_only_costs_hashing_again(tmp_path, hashed):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    write(inbox / "a.jsonl", range(3))
    expected = request_log_lake.pending_files(lake, inbox)
    cache = lake / "_cache" / "inbox_hashes.parquet"
    for damage in (lambda: cache.write_bytes(b"PAR1 not a parquet file"), cache.unlink,
                   lambda: shutil.rmtree(lake / "_cache")):
        damage() if cache.exists() else None
        hashed.clear()
        assert request_log_lake.pending_files(lake, inbox) == expected
        assert hashed == ["a.jsonl"]


def test_a_file_staged_then_unchanged_is_neither_pending_nor_hashed(tmp_path, hashed):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    write(inbox / "a.jsonl", range(3))
    items = request_log_lake.pending_files(lake, inbox)
    list(request_log_lake.stage_files(lake, inbox, items, clock.now()))
    hashed.clear()
    assert request_log_lake.pending_files(lake, inbox) == []
    assert hashed == []
