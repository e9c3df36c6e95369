"""The gateway ledger by bulk CSV export, paging as the fallback: the same rows either way, one line
why when it falls back, and the access token nowhere."""

from __future__ import annotations

import csv
import io
import logging
import math
import traceback
from datetime import timedelta

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SIM_START
from pipelines.lib.gateway import lake as gateway_lake, ledger as gateway_ledger
from pipelines.lib.cometapi.gateway import DATA_PATH, EXPORT_PATH, LOG_PATH, STAT_PATH, GatewayClient
from pipelines.lib.cometapi.http import CometAPIError, RetryPolicy
from pipelines.lib.gateway.ledger import GatewayRecord, parse_item, records_to_table
from pipelines.lib.gateway.pull import LogPull, pull_log, pull_span
from pipelines.simulator.server import SimulatorServer
from oracles.gateway import summarise

UTC = gateway_lake.UTC
PULLED_AT = gateway_lake.datetime(2026, 11, 1, tzinfo=UTC)
# Ten days holding every planted reality of the 30-day simulation: the refund (day 18), the unknown
# usage (20), the negative correction (22), the leak (24) and the late positive correction (27).
FIRST, LAST = SIM_START + timedelta(days=18), SIM_START + timedelta(days=27)
DAYS = (LAST - FIRST).days + 1
FIELDS = ["id", "created_at", "type", "content", "token_name", "model_name", "quota", "prompt_tokens",
          "completion_tokens", "use_time", "is_stream", "group", "ip", "request_id", "other"]


def gateway(url: str, token: str, transport: httpx.BaseTransport | None = None, attempts: int = 3) -> GatewayClient:
    return GatewayClient(url, token, policy=RetryPolicy(max_attempts=attempts, base_delay=0), sleep=lambda _: None,
                         transport=transport)


def ledger_rows(pulled: LogPull) -> tuple[pa.Table, int]:
    """(rows, rejects) of a pull as the lake keeps them: parsed, deduplicated, in the lake's order."""
    parsed = [gateway_lake.chunk_records(chunk) for chunk in pulled.chunks]
    rows, _ = gateway_ledger.dedupe_sorted(pa.concat_tables([records for records, _, _ in parsed]))
    return without_ids(rows), sum(len(rejects) for _, rejects, _ in parsed)


def without_ids(rows: pa.Table) -> pa.Table:
    """The rows but their `id`: the row's place on its page (upstream since 2026-02), or in the export."""
    return rows.drop_columns(["log_id"])


def pull(sim: SimulatorServer, **options) -> tuple[LogPull, pa.Table]:
    start_ts, end_ts = gateway_lake.day_bounds(FIRST, LAST)
    with gateway(sim.url, sim.access_token) as client:
        pulled = pull_log(client, start_ts, end_ts, **options)
    rows, rejects = ledger_rows(pulled)
    assert rejects == 0
    return pulled, rows


def land(sim: SimulatorServer, lake) -> gateway_lake.GatewayWindow:
    """The window landed as the asset lands it (a day at a time)."""
    with gateway(sim.url, sim.access_token) as client:
        _, window = gateway_lake.land_window(lake, FIRST, LAST, client=client, now=lambda: PULLED_AT)
    return window


def items(pulled: LogPull) -> list[dict]:
    return [item for chunk in pulled.chunks for page in chunk.pages for item in page]


def export_calls(sim: SimulatorServer) -> int:
    return sum(1 for c in sim.calls if c.path == EXPORT_PATH)


@pytest.fixture(autouse=True)
def with_export(sim):
    """CometAPI serves the export (upstream has no such route: the simulator offers it behind a flag)."""
    sim.export = True


@pytest.fixture
def paged(sim) -> pa.Table:
    """The window's rows as paging alone gives them (the late correction already visible)."""
    sim.mark_restated()
    pulled, rows = pull(sim, export=False)
    assert pulled.method == "paging" and export_calls(sim) == 0
    # per day: its pages, the empty page that ends them, /api/log/self/stat and /api/data/self
    assert pulled.calls == sum(math.ceil(chunk.items / 100) + 3 for chunk in pulled.chunks)
    sim.calls.clear()
    return rows


# --- the same rows either way ----------------------------------------------------------------------


def test_export_lands_exactly_the_rows_paging_lands(sim, paged, tmp_path):
    pulled, rows = pull(sim)
    assert (pulled.method, pulled.exported_chunks, pulled.fallbacks) == ("export", DAYS, [])
    assert pulled.calls == 3 * DAYS  # per day: the export, and the stat and data totals that check it
    assert export_calls(sim) == DAYS and not any(c.params.get("page_size") == "100" for c in sim.calls)
    assert all(chunk.cells is not None for chunk in pulled.chunks)  # read in bulk, not item by item
    assert rows == paged and rows.num_rows > 300

    records = [GatewayRecord(**row, log_id=None) for row in rows.to_pylist()]
    planted = sim.traffic.planted
    assert any(r.log_type == 6 and r.billed_usd < 0 for r in records)  # the refund
    # the negative correction: since 2026-02 a type-6 row giving back what the lower final price saves
    assert any(r.log_type == 6 and r.pre_consumed_quota and r.billed_usd < 0 for r in records)
    # task refunds and corrections carry no request id (upstream service/task_billing.go): their own identity
    assert [r.billed_usd for r in records if r.is_correction and not r.has_request_id] == [planted["restatement"]["usd"]]
    assert sum(1 for r in records if r.log_type == 5) > 3 and all(r.billed_usd == 0 for r in records if r.log_type == 5)
    truth = {k: v for k, v in sim.truth().items() if FIRST <= k[0] <= LAST}
    assert summarise(records) == truth

    # and in the lake, landed a day at a time: the same Parquet rows, whatever the path
    sim.calls.clear()
    exported = land(sim, tmp_path / "export")
    assert (exported.api_method, exported.api_calls, exported.fallbacks) == ("export", 3 * DAYS, [])
    assert (exported.rows, exported.duplicates, exported.rejects) == (rows.num_rows, 0, [])
    assert gateway_lake.summary(exported)["billed_usd"] == sum(r.billed_usd for r in records)
    sim.faults.add("export_unavailable")
    paging = land(sim, tmp_path / "paging")
    assert paging.api_method == "paging" and len(paging.fallbacks) == 1  # asked once, then paged
    ignore = {"api_method": "", "api_calls": 0, "fallbacks": [], "pages": 0, "checks": {}}  # paging also checks total
    assert gateway_lake.summary(paging) | ignore == gateway_lake.summary(exported) | ignore
    for day in (FIRST + timedelta(days=i) for i in range(DAYS)):
        part = f"gateway_logs/utc_date={day}/ledger.parquet"
        exported_day = without_ids(pq.read_table(tmp_path / "export" / part))
        assert exported_day == without_ids(pq.read_table(tmp_path / "paging" / part))
        assert exported_day == rows.filter(pa.compute.equal(rows["utc_date"], day))
    pulls = [row for f in (tmp_path / "export" / "gateway_pulls").rglob("*.parquet")
             for row in pq.read_table(f).to_pylist()]
    assert [(p["api_method"], p["api_calls"], p["sources"], p["rows"]) for p in pulls] == [
        ("export", 3 * DAYS, "api", rows.num_rows)]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("chunk_days", [3, DAYS])
def test_longer_export_chunks_give_the_same_rows(sim, paged, chunk_days):
    pulled, rows = pull(sim, chunk_days=chunk_days)
    assert pulled.method == "export" and export_calls(sim) == math.ceil(DAYS / chunk_days)
    assert rows == paged


def test_chunk_days_is_checked_before_any_call(sim):
    with gateway(sim.url, sim.access_token) as client, pytest.raises(ValueError, match="chunk_days"):
        pull_log(client, 1, 2, chunk_days=0)
    assert sim.calls == []


# --- a day at a time, and still all or nothing ------------------------------------------------------


def files_of(lake) -> dict[str, bytes]:
    return {str(f.relative_to(lake)): f.read_bytes() for f in sorted(lake.rglob("*")) if f.is_file()}


class FailsOnDay:
    """A client whose pull of the n-th day fails, as a lasting API failure would (at the day's first
    call: the gateway's totals)."""

    def __init__(self, client: GatewayClient, n: int) -> None:
        self.client, self.n, self.days = client, n, 0

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def server_totals(self, start_ts: int, end_ts: int, **options):
        self.days += 1
        if self.days == self.n:
            raise CometAPIError("CometAPI gateway GET /api/log/self/stat: HTTP 503 (gave up after 3 attempts)")
        return self.client.server_totals(start_ts, end_ts, **options)


def test_a_pull_failing_on_a_later_day_leaves_the_lake_as_it_was(sim, tmp_path):
    land(sim, tmp_path)  # the window landed once: files to keep
    before = files_of(tmp_path)
    with gateway(sim.url, sim.access_token) as client, pytest.raises(CometAPIError):
        gateway_lake.land_window(tmp_path, FIRST, LAST, client=FailsOnDay(client, 6), now=lambda: PULLED_AT)
    assert files_of(tmp_path) == before  # five days parsed and staged, none put in place, no temporaries left


def test_a_failure_while_the_days_are_put_in_place_claims_none_of_them(sim, tmp_path, monkeypatch):
    real_replace, renamed = gateway_lake.os.replace, []

    def replace(src, dst):
        if len(renamed) == 4:
            raise OSError("disk full")
        renamed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(gateway_lake.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        land(sim, tmp_path)
    assert len(renamed) == 4 and sorted(p.name for p in tmp_path.rglob("*.parquet")) == ["ledger.parquet"] * 4
    assert not (tmp_path / "gateway_pulls").exists()  # no pull record: no day counts as covered
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# --- falling back ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["404", "405", "html_200", "success_false"])
def test_an_unavailable_export_is_asked_once_then_the_window_is_paged(sim, paged, caplog, style):
    sim.faults.add("export_unavailable", style=style)
    caplog.set_level(logging.INFO, logger="comet_ledger.http")  # a missing route is normal: INFO, not WARNING
    pulled, rows = pull(sim)
    assert (pulled.method, pulled.exported_chunks, pulled.paged_spans) == ("paging", 0, DAYS)
    assert export_calls(sim) == 1
    assert rows == paged
    warnings = [r.getMessage() for r in caplog.records if r.name == "comet_ledger.http"]
    assert len(warnings) == 1 and warnings == pulled.fallbacks
    assert EXPORT_PATH in warnings[0] and warnings[0].endswith("paging the rest of the window instead")


def test_a_cut_short_export_is_paged_for_that_day_only(sim, paged):
    sim.faults.add("truncated_json", times=1, paths=[EXPORT_PATH])
    pulled, rows = pull(sim)
    assert (pulled.method, pulled.exported_chunks, pulled.paged_spans) == ("export+paging", DAYS - 1, 1)
    assert export_calls(sim) == DAYS
    assert len(pulled.fallbacks) == 1 and "paging this chunk instead" in pulled.fallbacks[0]
    assert rows == paged


def test_an_export_whose_header_is_not_understood_is_not_asked_again(sim, paged):
    sim.faults.add("renamed_field", times=None, paths=[EXPORT_PATH], from_="created_at", to="when")
    pulled, rows = pull(sim)
    assert pulled.method == "paging" and export_calls(sim) == 1
    assert "missing created_at" in pulled.fallbacks[0]
    assert rows == paged


def test_transient_export_failures_are_retried_like_pages(sim, paged):
    sim.faults.add("status", codes=[503], paths=[EXPORT_PATH])
    sim.faults.add("reset", times=1, paths=[EXPORT_PATH])  # two failures; gateway(...) makes 3 attempts
    pulled, rows = pull(sim)
    assert (pulled.method, pulled.fallbacks) == ("export", [])
    assert export_calls(sim) == DAYS + 2 and rows == paged


def test_an_export_that_keeps_failing_is_paged_for_that_day_and_tried_again_the_next(sim, paged):
    sim.faults.add("status", codes=[503] * 3, paths=[EXPORT_PATH])  # gateway(...) makes 3 attempts
    pulled, rows = pull(sim)
    assert (pulled.method, pulled.exported_chunks, pulled.paged_spans) == ("export+paging", DAYS - 1, 1)
    assert "gave up after 3 attempts" in pulled.fallbacks[0]
    assert rows == paged


def row(created_at: int, request_id: str) -> dict:
    return {"id": 1, "created_at": created_at, "type": 2, "content": "", "token_name": "k", "model_name": "m",
            "quota": 10, "prompt_tokens": 1, "completion_tokens": 1, "use_time": 1, "is_stream": False,
            "group": "default", "ip": "", "request_id": request_id, "other": ""}


def csv_body(rows: list[dict], header: list[str] = FIELDS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([["false" if r[f] is False else r[f] for f in FIELDS] for r in rows])
    return out.getvalue().encode()


class Gateway:
    """A scripted gateway on MockTransport: `export(request)` answers the export, pages come from `items`."""

    def __init__(self, export, items: list[dict], total: int | None = None, page=None, stat: int | None = None):
        self.export, self.items, self.total, self.page, self.stat = export, items, total, page, stat
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == EXPORT_PATH:
            return self.export(request)
        if request.url.path == STAT_PATH:  # the type-2 quota of the rows, as upstream sums it
            quota = sum(i["quota"] for i in self.items if i["type"] == 2) if self.stat is None else self.stat
            return httpx.Response(200, json={"success": True, "data": {"quota": quota, "rpm": 0, "tpm": 0}})
        if request.url.path == DATA_PATH:  # a gateway without it
            return httpx.Response(404, json={"error": {"message": "Invalid URL", "type": "invalid_request_error"}})
        if self.page is not None:
            return self.page(request)
        p, size = int(request.url.params["p"]), int(request.url.params["page_size"])
        data = {"page": p, "page_size": size, "total": len(self.items) if self.total is None else self.total,
                "items": self.items[(p - 1) * size: p * size]}
        return httpx.Response(200, json={"success": True, "message": "", "data": data})


START_TS, END_TS = 1_789_999_200, 1_789_999_200 + 86_399  # whole UTC hours, as /api/data/self counts
ROWS = [row(START_TS + 10, "r1"), row(START_TS + 20, "r2")]


def pull_mock(server: Gateway, token: str = "tok") -> LogPull:
    with gateway("https://api.example.test", token, httpx.MockTransport(server)) as client:
        return pull_log(client, START_TS, END_TS)


def csv_reply(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/csv"})


def test_an_export_short_of_the_stat_is_paged():
    server = Gateway(lambda r: csv_reply(csv_body(ROWS[:1])), ROWS, total=10_000)  # capped silently at one row
    pulled = pull_mock(server)
    assert pulled.method == "paging" and [i["request_id"] for i in items(pulled)] == ["r1", "r2"]
    assert "does not add up" in pulled.fallbacks[0] and "/api/log/self/stat says 20" in pulled.fallbacks[0]
    # the totals, the export, then the page and the empty page that ends the paging
    assert server.paths == [STAT_PATH, DATA_PATH, EXPORT_PATH, LOG_PATH, LOG_PATH]


def test_an_export_ignoring_its_window_is_paged():
    server = Gateway(lambda r: csv_reply(csv_body([*ROWS, row(END_TS + 1, "r3")])), ROWS)
    pulled = pull_mock(server)
    assert pulled.method == "paging" and "inside the window" in pulled.fallbacks[0]


def test_a_broken_page_after_an_unusable_export_fails_the_pull():
    server = Gateway(lambda r: csv_reply(b"when,what\n1,2\n"), ROWS,
                     page=lambda r: httpx.Response(200, json={"success": True, "data": {"total": 2}}))
    with pytest.raises(CometAPIError, match="data has no items"):
        pull_mock(server)


def test_an_export_that_checks_out_is_used():
    server = Gateway(lambda r: csv_reply(b"\xef\xbb\xbf" + csv_body(ROWS)), ROWS)
    pulled = pull_mock(server)
    assert (pulled.method, pulled.calls, pulled.items) == ("export", 3, 2)  # stat, data (absent), export
    (chunk,) = pulled.chunks
    assert chunk.cells.column("request_id").to_pylist() == ["r1", "r2"]  # read in bulk
    expected = [parse_item({**r, "content": None, "ip": None, "other": None}) for r in ROWS]
    assert gateway_lake.chunk_records(chunk) == (records_to_table(expected), [], 1)


class BreaksMidBody(httpx.SyncByteStream):
    """A body that stops after its first chunk, as when the connection drops mid-download."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self):
        yield self.body[: len(self.body) // 2]
        raise httpx.ReadError("connection reset by peer")


def test_an_export_cut_off_mid_download_is_fetched_again_whole():
    body = csv_body(ROWS)
    answers = iter([httpx.Response(200, headers={"content-type": "text/csv"}, stream=BreaksMidBody(body)),
                    csv_reply(body)])
    server = Gateway(lambda r: next(answers), ROWS)
    pulled = pull_mock(server)
    assert (pulled.method, pulled.items, pulled.fallbacks) == ("export", 2, [])
    assert server.paths == [STAT_PATH, DATA_PATH, EXPORT_PATH, EXPORT_PATH]


def test_an_unlabelled_export_is_read_and_a_json_one_is_not():
    server = Gateway(lambda r: httpx.Response(200, content=csv_body(ROWS)), ROWS)  # no content-type at all
    assert pull_mock(server).method == "export"
    server = Gateway(lambda r: httpx.Response(200, json={"success": True, "data": []}), ROWS)
    pulled = pull_mock(server)
    assert pulled.method == "paging" and "answered JSON, not a file" in pulled.fallbacks[0]


# --- the access token nowhere ------------------------------------------------------------------------

CANARY = "tok-EXPORTCANARY-5e1f00d9a7"
CANARY_PART = "EXPORTCANARY"


def _echo(kind: str):
    """An export failure whose answer carries the token back."""

    def answer(request: httpx.Request) -> httpx.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        if kind == "html_404":
            page = f"<html><head><title>404 {token}</title></head><body>no {token}</body></html>"
            return httpx.Response(404, text=page, headers={"content-type": "text/html"})
        if kind == "success_false":
            return httpx.Response(200, json={"success": False, "message": f"{token} may not export"})
        if kind == "unknown_header":
            return csv_reply(f"when,{token}\n1,2\n".encode())
        if kind == "bad_cell":
            bad = dict(ROWS[0], created_at=f"{token}")
            return csv_reply(csv_body([bad]))
        if kind == "status_503":
            return httpx.Response(503, json={"error": {"message": f"busy, {token}", "code": token}})
        if kind == "cut":
            return csv_reply(csv_body(ROWS)[:-20])
        raise AssertionError(kind)

    return answer


def _denied(request: httpx.Request) -> httpx.Response:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    return httpx.Response(401, json={"success": False, "message": f"access token {token} is invalid"})


def _assert_nowhere(*texts: str) -> None:
    for text in texts:
        assert CANARY_PART not in text


@pytest.mark.parametrize("paging_ok", [True, False], ids=["then-paged", "then-paging-fails"])
@pytest.mark.parametrize("kind", ["html_404", "success_false", "unknown_header", "bad_cell", "status_503", "cut"])
def test_no_export_failure_leaks_the_access_token(tmp_path, caplog, capfd, kind, paging_ok):
    caplog.set_level(logging.DEBUG)
    server = Gateway(_echo(kind), ROWS, page=None if paging_ok else _denied)
    texts = []
    try:
        pulled = pull_mock(server, token=CANARY)
    except CometAPIError as exc:
        assert not paging_ok
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc)), str(exc.code), exc.url]
    else:
        assert paging_ok and pulled.method == "paging" and pulled.items == 2
        texts += pulled.fallbacks
        (chunk,) = pulled.chunks
        day = gateway_lake.datetime.fromtimestamp(START_TS, UTC).date()
        with gateway_lake.Landing(tmp_path / "lake", day, day) as landing:
            assert landing.add_day(day, chunk) == 2
            landing.commit(PULLED_AT)
        assert texts and any(EXPORT_PATH in t for t in texts)
    out, err = capfd.readouterr()
    texts += [out, err, caplog.text, *(r.getMessage() for r in caplog.records),
              repr(gateway("https://api.example.test", CANARY))]
    _assert_nowhere(*texts)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and CANARY_PART.encode() in p.read_bytes()] == []
    assert any(p.is_file() for p in tmp_path.rglob("*")) is paging_ok


@pytest.mark.parametrize("fault, opts", [("export_unavailable", {}), ("truncated_json", {"paths": [EXPORT_PATH]}),
                                         ("maintenance", {"paths": [EXPORT_PATH]})])
def test_simulator_export_failures_leak_nothing_into_logs_or_the_lake(traffic, tmp_path, caplog, capfd, fault, opts):
    caplog.set_level(logging.DEBUG)
    with SimulatorServer(traffic, access_token=CANARY, export=True) as sim:
        sim.faults.add(fault, times=None, **opts)
        window = land(sim, tmp_path / "lake")
        with gateway(sim.url, CANARY + "-wrong") as client, pytest.raises(CometAPIError) as caught:
            pull_span(client, *gateway_lake.day_bounds(FIRST, FIRST))
    assert window.api_method in ("paging", "export+paging") and window.fallbacks and window.rows
    assert "check COMETAPI_ACCESS_TOKEN" in str(caught.value)
    out, err = capfd.readouterr()
    _assert_nowhere(*window.fallbacks, str(caught.value), out, err, caplog.text)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and CANARY_PART.encode() in p.read_bytes()] == []
