"""One span of the gateway's ledger pulled and checked: its CSV export where that checks out, else its pages.

The client (`pipelines/lib/cometapi/gateway.py`) speaks HTTP only: pages of items, the export's
bytes, the gateway's own totals. Here those answers are read with the ledger's rules and checked,
without trusting `total` (upstream caps it at 10 000: model/log.go logSearchCountLimit, checked by
the client's paging):
- the span's type-2 quota as received (`consume_units`) is compared with `/api/log/self/stat`
  (upstream sums type 2 only: model/log.go SumUsedQuota) and with `/api/data/self` (hourly totals of
  consume rows per model: model/usedata.go) where the server offers them (`SpanCheck`); a mismatch
  fails the span (`LedgerIncomplete`), a check the server does not offer is "not_checked";
- the CSV export (`/api/log/self/export`, CometAPI's own: no route upstream) is tried first and
  used only when its header is recognised and its rows pass those same checks (at least one of them
  offered); otherwise the span is paged. An export that checks out comes back as string columns
  (`fast.export_cells`).
`pull_log` pulls a window in chunks of days the same way; the lake lands one day at a time
(`lake.land_window`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.lib.cometapi.gateway import (
    CHECK_PATHS,
    EXPORT_PATH,
    FAILED,
    NOT_CHECKED,
    PASSED,
    SERVICE,
    GatewayClient,
    LedgerIncomplete,
    SpanCheck,
    check_window,
    utc_span,
)
from pipelines.lib.cometapi.http import CometAPIError
from pipelines.lib.gateway.fast import export_cells
from pipelines.lib.gateway.ledger import LOG_CONSUME, ExportError

# One export call per day: as fast as one call per window (docs/benchmarks.md), while a day's CSV
# (~40 MB at 100 000 requests) bounds how long one answer takes (a proxy may time out a long one)
# and what a failed or cut-short export costs to fetch again or to page instead.
EXPORT_CHUNK_DAYS = 1
# A fallback is a line about the HTTP pull: logged where the client's retries are.
logger = logging.getLogger("comet_ledger.http")


@dataclass
class LogChunk:
    """One span of the ledger [start_ts, end_ts] as it came: exported, or paged, and how it was checked."""

    start_ts: int
    end_ts: int
    method: str = "none"  # export or paging
    cells: pa.Table | None = None  # an export, as `fast.export_cells` read it in bulk
    pages: list[list[dict]] = field(default_factory=list)  # API pages (or an export read item by item)
    calls: int = 0  # HTTP calls made (exports, checks, pages), retries not counted
    fallback: str | None = None  # why it was paged instead of exported (one redacted line)
    checks: list[SpanCheck] = field(default_factory=list)
    consume_units: int = 0  # the type-2 quota of every item received (rejected ones too)
    total: int | None = None  # `total` of the last page, for the record

    @property
    def items(self) -> int:
        return (0 if self.cells is None else self.cells.num_rows) + sum(len(page) for page in self.pages)


@dataclass
class LogPull:
    """The chunks of one window (`pull_log`)."""

    chunks: list[LogChunk] = field(default_factory=list)

    @property
    def exported_chunks(self) -> int:
        return sum(1 for chunk in self.chunks if chunk.method == "export")

    @property
    def paged_spans(self) -> int:
        return sum(1 for chunk in self.chunks if chunk.method == "paging")

    @property
    def calls(self) -> int:
        return sum(chunk.calls for chunk in self.chunks)

    @property
    def fallbacks(self) -> list[str]:
        return [chunk.fallback for chunk in self.chunks if chunk.fallback]

    @property
    def method(self) -> str:
        """`export`, `paging`, `export+paging` (some chunks fell back), or `none` (empty window)."""
        return method_of(self.exported_chunks, self.paged_spans)

    @property
    def items(self) -> int:
        return sum(chunk.items for chunk in self.chunks)


def method_of(exported: int, paged: int) -> str:
    """How a window was read: `export`, `paging`, `export+paging` or `none`."""
    used = [name for name, n in (("export", exported), ("paging", paged)) if n]
    return "+".join(used) or "none"


def pull_span(client: GatewayClient, start_ts: int, end_ts: int, *, export: bool = True) -> LogChunk:
    """Every ledger item of [start_ts, end_ts] (unix seconds), checked; raises `LedgerIncomplete`.

    With `export` (the default), the CSV export is tried first: one call, whose CSV must pass `export_cells`
    (header, whole rows, every `created_at` inside the span) and the span's checks (`SpanCheck`),
    and at least one check must be offered. An export that is not there (404, 405, an HTML page,
    `success: false`, a header not understood) is not asked again of this client; one cut short,
    out of its span, failing or lacking a check, or still failing after the retries is paged for
    this span only. Each fallback logs one line why. Paged rows must pass the same checks.
    """
    check_window(start_ts, end_ts)
    chunk = LogChunk(start_ts, end_ts)
    calls_before = client.calls
    totals = client.server_totals(start_ts, end_ts, consume_type=LOG_CONSUME)
    exported = _exported(client, chunk, totals) if export and client.export_available is not False else None
    if isinstance(exported, pa.Table):
        chunk.method, chunk.cells = "export", exported
    elif exported is not None:
        chunk.method, chunk.pages = "export", [exported] if exported else []
    else:
        chunk.method = "paging"
        paged = client.page_span(start_ts, end_ts)
        chunk.pages, chunk.total = paged.pages, paged.total
        chunk.consume_units = sum(consume_units(page) for page in paged.pages)
        chunk.checks = [paged.check, *_compare(totals, chunk.consume_units)]
        failed = [check for check in chunk.checks if check.status == FAILED]
        if failed:
            raise LedgerIncomplete(client.masked(f"{SERVICE} ledger of {utc_span(start_ts, end_ts)} is incomplete: "
                                                 f"{'; '.join(check.detail for check in failed)}"))
    chunk.calls = client.calls - calls_before
    return chunk


def pull_log(client: GatewayClient, start_ts: int, end_ts: int, *, export: bool = True,
             chunk_days: int = EXPORT_CHUNK_DAYS) -> LogPull:
    """Every ledger item of [start_ts, end_ts], as `pull_span`s of `chunk_days` x 86 400 s."""
    check_window(start_ts, end_ts)
    if isinstance(chunk_days, bool) or not isinstance(chunk_days, int) or chunk_days < 1:
        raise ValueError(f"chunk_days must be a whole number of days >= 1, got {chunk_days!r}")
    pull = LogPull()
    chunk_start = start_ts
    while chunk_start <= end_ts:
        chunk_end = min(chunk_start + chunk_days * 86_400 - 1, end_ts)
        pull.chunks.append(pull_span(client, chunk_start, chunk_end, export=export))
        chunk_start = chunk_end + 1
    return pull


def _exported(client: GatewayClient, chunk: LogChunk,
              totals: dict[str, tuple[int | None, str]]) -> pa.Table | list[dict] | None:
    """The span's rows from the export, or None (after logging why) when it must be paged."""
    start_ts, end_ts = chunk.start_ts, chunk.end_ts
    span = utc_span(start_ts, end_ts)
    if all(units is None for units, _ in totals.values()):
        return _fall_back(client, chunk, f"{SERVICE} GET {EXPORT_PATH}: the export of {span} cannot be checked "
                                         "(neither /api/log/self/stat nor /api/data/self is offered)", lasting=False)
    try:
        rows = _export_rows(client, start_ts, end_ts, f"the export of {span}")
    except CometAPIError as exc:
        lasting = not exc.retriable
        return _fall_back(client, chunk, f"{exc} ({span})", lasting, expected=exc.status in (404, 405, 501))
    except ExportError as exc:
        return _fall_back(client, chunk, f"{SERVICE} GET {EXPORT_PATH}: {exc}", exc.lasting)
    units = consume_units(rows)
    checks = _compare(totals, units)
    failed = [check for check in checks if check.status == FAILED]
    if failed:
        return _fall_back(client, chunk, f"{SERVICE} GET {EXPORT_PATH}: the export of {span} does not add up: "
                                         f"{'; '.join(check.detail for check in failed)}", lasting=False)
    client.export_available = True
    chunk.checks, chunk.consume_units = checks, units
    return rows


def _export_rows(client: GatewayClient, start_ts: int, end_ts: int, name: str) -> pa.Table | list[dict]:
    """The export's rows (`export_cells`: columns, or items), `ExportError` if it does not check out.
    The body is let go as soon as it is read."""
    return export_cells(client.fetch_export(start_ts, end_ts), start_ts=start_ts, end_ts=end_ts, name=name)


def _fall_back(client: GatewayClient, chunk: LogChunk, reason: str, lasting: bool, expected: bool = False) -> None:
    """Page instead, saying why; a gateway without the export (upstream has no such route) is `expected`
    and logged at INFO, anything else at WARNING."""
    if lasting:
        client.export_available = False
    line = client.masked(f"{reason}; paging {'the rest of the window' if lasting else 'this chunk'} instead")
    logger.log(logging.INFO if expected else logging.WARNING, "%s", line)
    chunk.fallback = line
    return None


def consume_units(rows: pa.Table | list[dict]) -> int:
    """The type-2 quota of a span's items as received (what upstream's stat and data endpoints sum)."""
    if isinstance(rows, pa.Table):
        if "quota" not in rows.column_names or "type" not in rows.column_names or not rows.num_rows:
            return 0
        consume = rows.filter(pc.and_(pc.equal(rows["type"], str(LOG_CONSUME)),
                                      pc.match_substring_regex(rows["quota"], r"^-?[0-9]{1,17}$")))
        return int(pc.sum(pc.cast(consume["quota"], pa.int64())).as_py() or 0)
    total = 0
    for item in rows:
        quota = item.get("quota")
        if item.get("type") == LOG_CONSUME and isinstance(quota, int) and not isinstance(quota, bool) \
                and not isinstance(item.get("type"), bool):
            total += quota
    return total


def _compare(totals: dict[str, tuple[int | None, str]], units: int) -> list[SpanCheck]:
    checks = []
    for name, (server, why) in totals.items():
        if server is None:
            checks.append(SpanCheck(name, NOT_CHECKED, units, None, why))
        elif server == units:
            checks.append(SpanCheck(name, PASSED, units, server))
        else:
            checks.append(SpanCheck(name, FAILED, units, server,
                                    f"its type-2 rows sum to {units} quota units, {CHECK_PATHS[name]} says {server}"))
    return checks
