"""Hostile files: what the inbox, the config files and the disk can do to a run (issue 18;
docs/reliability.md, "Hostile answers and hostile files").

One hostile inbox, run once through the whole daily job, holds:
2. a symbolic link to a mode-0600 `.env` outside the inbox, a link to a folder outside it, and a bad
   line carrying the configured key and token, neither shaped like `sk-...`;
3. a client-log key named `=HYPERLINK(...)` and, in key_owners.csv, a team `@SUM(1+1)` and a project
   `-2+3`, which end up in the evidence pack's CSVs;
4. a file whose name is not UTF-8;
9. request ids sent twice: once identical (a duplicate), once with another key, once with other token
   counts (conflicts), once interrupted then complete (the normal case: neither).
Then, on copies of that home:
8. a full disk during the warehouse build, a lake write, and Dagster's SQLite storage;
9. what a run writes is 0640 / 0750.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import sqlite3
import stat
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy.exc

from conftest import make_settings, materialize_days
from pipelines.lib.review_pack import build_pack
from pipelines.simulator.server import SimulatorServer
from support import (
    FIRST,
    KEY_OWNERS,
    LAST,
    REPO,
    file_digests,
    make_world,
    query,
    run_cli,
    secrets_found,
    small_traffic,
)
from test_bad_input import chat_body, envelope

KEY = "qk-FILESKEY-4d2a9e0b71"  # neither looks like sk-...: only knowing the value masks it
TOKEN = "FILESTOKEN-0b5e6f7a88"
HYPERLINK = '=HYPERLINK("http://127.0.0.1/x?"&A1,"ok")'
DAY = "2026-10-05"
NOT_UTF8 = b"team-b-prod/\xff-export.jsonl"


def line(request_id: str, *, key: str = "team-a-prod", usage: bool = True, **tokens) -> str:
    body = chat_body(request_id, **tokens)
    if not usage:
        body = {k: v for k, v in body.items() if k != "usage"}  # an interrupted stream: no usage
    return json.dumps(envelope(request_id, key_name=key, body=body))


def write_hostile_inbox(root: Path, inbox: Path) -> None:
    outside = root / "outside"
    outside.mkdir()
    env_file = outside / ".env"
    env_file.write_text(f"COMETAPI_KEY={KEY}\nCOMETAPI_ACCESS_TOKEN={TOKEN}\n")
    env_file.chmod(0o600)
    os.symlink(env_file, inbox / "team-a-prod" / "leaked.jsonl")
    os.symlink(outside, inbox / "elsewhere")
    (inbox / "team-b-prod" / "echo.jsonl").write_text(f"oops {TOKEN} {KEY}\n")
    with open(os.fsencode(inbox) + b"/" + NOT_UTF8, "wb") as fh:
        fh.write(line("not-utf8-1").encode() + b"\n")
    (inbox / "team-a-prod" / "copies-1.jsonl").write_text("\n".join([
        line("twice-same"), line("twice-key"), line("twice-tokens"), line("twice-stream", usage=False),
        line("injected", key=HYPERLINK)]) + "\n")
    (inbox / "team-b-prod" / "copies-2.jsonl").write_text("\n".join([
        line("twice-same"), line("twice-key", key="team-b-prod"),
        line("twice-tokens", prompt_tokens=150, total_tokens=170), line("twice-stream")]) + "\n")


def hostile_owners(path: Path) -> Path:
    text = KEY_OWNERS.read_text().replace("team-a-prod,team-a,assistant,", "team-a-prod,@SUM(1+1),-2+3,")
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    with SimulatorServer(small_traffic(), api_key=KEY, access_token=TOKEN) as sim:
        world = make_world(root, sim, sim.traffic)
        write_hostile_inbox(root, world.settings.inbox)
        settings = make_settings(world.home, sim, COMETAPI_ACCESS_TOKEN=TOKEN, COMET_LEDGER_PRICES=str(world.prices),
                                 COMET_LEDGER_KEY_OWNERS=str(hostile_owners(root / "owners.csv")))
        assert materialize_days(settings, FIRST, LAST).success  # the run goes on (point 4)
        yield dataclasses.replace(world, sim=sim), settings


def rejects(settings, source: str = "inbox_file") -> list[tuple]:
    return query(settings.warehouse_path, "SELECT file, line, reason, detail, raw FROM rejects WHERE source = $s "
                                          "ORDER BY file", {"s": source})


# --- 2. links out of the inbox; secrets of any shape -------------------------------------------------


def test_a_link_out_of_the_inbox_is_not_followed_and_is_reported(hostile):
    _, settings = hostile
    skipped = {(file, reason) for file, line, reason, _, raw in rejects(settings) if line is None and raw is None}
    assert {("elsewhere", "link_outside_inbox"), ("team-a-prod/leaked.jsonl", "link_outside_inbox")} <= skipped
    files = {f for (f,) in query(settings.warehouse_path, "SELECT file FROM inbox_files")}
    assert "team-a-prod/leaked.jsonl" not in files and not any(f.startswith("elsewhere") for f in files)
    [(read,)] = query(settings.warehouse_path, "SELECT count(*) FROM rejects WHERE raw LIKE '%COMETAPI_%'")
    assert read == 0  # no line of the .env was read


def test_the_configured_key_and_token_are_masked_wherever_raw_text_is_stored(hostile):
    world, settings = hostile
    [(raw,)] = query(settings.warehouse_path, "SELECT raw FROM rejects WHERE file = 'team-b-prod/echo.jsonl'")
    assert raw == "oops *** ***"
    # every file the run wrote, its Parquet and DuckDB contents decoded (a compressed page hides a
    # secret from a grep of the bytes); the inbox holds them on purpose and is left out
    assert secrets_found([settings.lake, settings.warehouse_path.parent / "warehouse_files",
                          settings.warehouse_path], [KEY, TOKEN]) == []


# --- 3. formulas in the evidence pack's CSVs ------------------------------------------------------------

FORMULA = ("=", "+", "-", "@", "\t", "\r")


def is_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except InvalidOperation:
        return False
    return True


def test_the_evidence_packs_csv_cells_never_start_a_formula(hostile, tmp_path):
    from pipelines.lib import clock

    _, settings = hostile
    pack = build_pack(settings.warehouse_path, settings.lake, settings.inbox, "2026-10", tmp_path,
                      timezone="UTC", built_at=clock.now())
    cells: dict[str, list[dict]] = {}
    for name in ("quota_daily_2026-10.csv", "recon_key_daily_2026-10.csv"):
        cells[name] = list(csv.DictReader(io.StringIO((pack.path / name).read_text())))
        for row in cells[name]:
            for column, cell in row.items():
                assert not cell.startswith(FORMULA) or is_number(cell), (name, column, cell)
    recon = cells["recon_key_daily_2026-10.csv"]
    assert "'" + HYPERLINK in {r["key_name"] for r in recon}  # written as text, not run
    assert {r["team"] for r in recon if r["key_name"] == "team-a-prod"} == {"'@SUM(1+1)"}
    assert {r["team"] for r in cells["quota_daily_2026-10.csv"] if r["key_name"] == "team-a-prod"} == {"'@SUM(1+1)"}
    negative = [r["variance_usd"] for r in recon if r["variance_usd"].startswith("-")]
    assert negative and all(is_number(v) for v in negative)  # numbers stay numbers


# --- 4. a name that is not UTF-8 -----------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_skipped_by_name_and_the_run_goes_on(hostile):
    world, settings = hostile
    assert ("team-b-prod/\\xff-export.jsonl", None, "name_not_utf8") in {r[:3] for r in rejects(settings)}
    staged = {f for (f,) in query(settings.warehouse_path, "SELECT file FROM inbox_files")}
    regular = {p.relative_to(settings.inbox).as_posix() for p in settings.inbox.rglob("*")
               if p.name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")) and p.is_file()
               and not p.is_symlink() and "\udcff" not in str(p)}
    assert staged == regular  # every other file was read
    [(landed,)] = query(settings.warehouse_path, "SELECT count(*) FROM requests WHERE request_id = 'not-utf8-1'")
    assert landed == 0


# --- 9. the same request_id, disagreeing --------------------------------------------------------------


def test_a_request_id_whose_copies_disagree_is_a_conflict_not_a_plain_duplicate(hostile):
    _, settings = hostile
    conflicts = query(settings.warehouse_path, "SELECT request_id, file, line_no, landed_file, landed_line, differs "
                                               "FROM request_conflicts ORDER BY request_id")
    assert conflicts == [
        ("twice-key", "team-b-prod/copies-2.jsonl", 2, "team-a-prod/copies-1.jsonl", 2,
         "key_name team-b-prod here, team-a-prod landed"),
        ("twice-tokens", "team-b-prod/copies-2.jsonl", 3, "team-a-prod/copies-1.jsonl", 3,
         "tokens (prompt, completion, total, cached, cache write, reasoning) [150, 20, 170, 0, 0, 0] here, "
         "[100, 20, 120, 0, 0, 0] landed"),
    ]
    counts = dict(((f, (d, c, b)) for f, d, c, b in query(
        settings.warehouse_path, "SELECT file, duplicates, conflicts, balanced FROM inbox_files "
                                 "WHERE file LIKE '%/copies-_.jsonl'")))
    # copies-2: twice-same (a plain duplicate) and the two conflicts; copies-1: the interrupted stream,
    # beaten by the complete copy (the rule's normal case, no conflict)
    assert counts == {"team-b-prod/copies-2.jsonl": (3, 2, True), "team-a-prod/copies-1.jsonl": (1, 0, True)}


# --- 8. a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def copy(hostile, tmp_path):
    """A copy of the hostile home, with its own new DAGSTER_HOME, to break a disk under."""
    world, _ = hostile
    home = tmp_path / "home"
    shutil.copytree(world.home, home, symlinks=True)
    return dataclasses.replace(world, home=home, dagster_home=tmp_path / "dagster")


def full_disk() -> str:
    """/dev/full, whose every write fails with the kernel's own ENOSPC ("No space left on device").
    Only ever opened, never passed as a path to a writer that removes its target on failure."""
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is not the kernel's full device"
    return "/dev/full"


def full_disk_write(data: bytes) -> None:
    with open(full_disk(), "wb") as fh:
        fh.write(data)
        fh.flush()


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir() if ".build" in p.name)


def test_a_full_disk_during_the_warehouse_build_says_so_and_leaves_no_build(copy, monkeypatch):
    before = file_digests(copy.home, skip=lambda p: "inbox" in p.parts)
    real_copy = shutil.copyfile

    def copy_onto_full_disk(src, dst, *args, **kwargs):
        if not str(dst).endswith(".build"):
            return real_copy(src, dst, *args, **kwargs)
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])  # half of it made it to disk
        full_disk_write(data[len(data) // 2:])

    monkeypatch.setattr(shutil, "copyfile", copy_onto_full_disk)
    status, err = run_cli(monkeypatch, copy, "run", "--date", LAST.isoformat(), "--repull", "0")
    assert status == 1
    assert re.fullmatch(rf"comet-ledger: error: \w+: no space left on {re.escape(str(copy.home))} \(building "
                        r"warehouse.duckdb\); free space there and re-run: nothing half-written was published",
                        err[-1]), err[-1]
    assert leftovers(copy.home) == []
    after = file_digests(copy.home, skip=lambda p: "inbox" in p.parts)
    assert after["warehouse.duckdb"] == before["warehouse.duckdb"]


def test_a_full_disk_during_a_lake_write_names_the_folder(copy, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    real_write = pq.write_table

    def write_onto_full_disk(table, where, *args, **kwargs):
        if "quota_daily" in str(where):
            with pa.OSFile(full_disk(), "wb") as sink:  # pyarrow's own ENOSPC error
                return real_write(table, sink, *args, **kwargs)
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_onto_full_disk)
    lake_before = file_digests(copy.home / "lake" / "quota_daily")
    status, err = run_cli(monkeypatch, copy, "run", "--date", LAST.isoformat(), "--repull", "0")
    assert status == 1
    folder = copy.home / "lake" / "quota_daily" / f"usage_date={LAST}"
    assert re.fullmatch(rf"comet-ledger: error: lake__quota_daily: no space left on {re.escape(str(folder))} "
                        r"\(writing [\w-]+\.parquet\); free space there and re-run: nothing half-written was "
                        r"published", err[-1]), err[-1]
    assert file_digests(copy.home / "lake" / "quota_daily") == lake_before  # no temporary file left either


def test_a_full_disk_under_dagster_home_is_not_called_a_disk_io_error(copy, monkeypatch):
    """SQLite says only "disk I/O error" when its journal cannot grow on a full disk: the storage fails
    mid-run (after 60 events) and the disk has no space left."""
    from pipelines.lib import disk

    real = dg.DagsterInstance.handle_new_event
    events = {"n": 0}

    def storage_on_a_full_disk(self, event, *args, **kwargs):
        events["n"] += 1
        if events["n"] > 60:
            raise sqlalchemy.exc.OperationalError("INSERT INTO event_logs ...", {},
                                                  sqlite3.OperationalError("disk I/O error"))
        return real(self, event, *args, **kwargs)

    monkeypatch.setattr(dg.DagsterInstance, "handle_new_event", storage_on_a_full_disk)
    monkeypatch.setattr(disk, "_free_bytes", lambda folder: 8192)
    status, err = run_cli(monkeypatch, copy, "run", "--date", LAST.isoformat(), "--repull", "0")
    assert status == 1
    assert err[-1] == (f"comet-ledger: error: no space left on {copy.dagster_home} (Dagster's run storage: SQLite "
                       "reported a disk I/O error with 0 MiB free)")
    assert leftovers(copy.home) == []


# --- 9. file modes ---------------------------------------------------------------------------------------


def test_what_a_run_writes_is_0640_and_its_folders_0750(copy, monkeypatch):
    existing = {p for p in copy.home.rglob("*")}
    status, _ = run_cli(monkeypatch, copy, "run", "--date", LAST.isoformat(), "--repull", "0")
    assert status == 0
    written = [p for p in copy.home.rglob("*") if p not in existing] + list(copy.dagster_home.rglob("*"))
    assert len(written) > 20
    loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in written
             if not p.is_symlink() and p.stat().st_mode & 0o027]
    assert loose == []
    for unit in ("comet-ledger-daemon.service", "comet-ledger-webserver.service"):
        assert "\nUMask=0027\n" in (REPO / "deploy" / unit).read_text()
