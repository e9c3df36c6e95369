"""The fast request-log engine: the same outcomes as `reader.read_file` + `normalize.parse_line`, in bulk.

Python frames, DuckDB normalises:

1. Framing (`_frames`): each file is streamed in bounded chunks (`chunk_bytes`, default 32 MiB); a chunk
   ends at its last '\\n' and the partial last line is carried to the next one, so a line of any length is
   read whole and memory does not grow with the file. Gzip is decompressed with `GzipFile.read1(8192)`,
   which makes exactly the raw reads that `reader.read_file`'s line iteration makes: a damaged stream
   yields the same lines before the break, then one `corrupt_gzip` reject numbered where it broke.
2. Normalising (`sql/staging/stg_request_log_lines.sql`): the chunk's lines go to DuckDB as an Arrow table
   (zero-copy views of the chunk's bytes) and ONE statement parses each line's JSON once and returns a
   complete `RECORD_SCHEMA` row for every line whose outcome it can prove equal to `parse_line`'s.
3. Fallback: every other line (blank lines, invalid UTF-8, every reject, and the rare inputs listed at the
   top of the SQL file) goes through `reader`'s own per-line code, so its outcome, reason, detail and raw
   text are the Python engine's by construction.

Records stay Arrow tables (`RECORD_SCHEMA`) end to end: `iter_chunks` yields them per chunk for callers
that write as they go; `read_file` / `read_inbox` collect them and `tally_tables` dedupes with the same
winner rule as `reader.dedupe`, in DuckDB.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa

from pipelines.lib.request_logs.normalize import (
    FUTURE_TOLERANCE,
    RECORD_SCHEMA,
    Reject,
    RequestRecord,
    records_to_table,
)
from pipelines.lib.request_logs.reader import (
    FileStats,
    Located,
    LocatedReject,
    _line_result,
    fallback_key_for,
    inbox_files,
)
from pipelines.lib.warehouse import model_path

CHUNK_BYTES: Final = 32 * 2**20
GZIP_READ: Final = 8192  # = io.DEFAULT_BUFFER_SIZE: the raw read size of the reader's BufferedReader
BATCH_ROWS: Final = 16_384  # Arrow record batches handed to DuckDB (its unit of parallelism)
TZ_WINDOW: Final = timedelta(days=3653)  # usage_date in SQL for ts within ~10 years before `now`
SQL_MODEL: Final = "stg_request_log_lines"
LOCATED_SCHEMA: Final = pa.schema([pa.field("file", pa.string(), nullable=False),
                                   pa.field("line_no", pa.int64(), nullable=False), *RECORD_SCHEMA])  # fmt: skip
_WHITESPACE: Final = "".join(ch for ch in map(chr, range(0x110000)) if ch.isspace())  # what str.strip() strips
_US: Final = 1_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Chunk:
    """One chunk of one file: its records (`RECORD_SCHEMA`, in line order), their line numbers, its rejects."""

    records: pa.Table
    line_no: pa.Int64Array
    rejects: list[LocatedReject]
    read: int  # non-blank lines (and a corrupt_gzip reject)
    blank: int
    fallback: int  # lines that went to the Python path (blank lines included)


@dataclass(frozen=True)
class FileResult:
    """One file, as `reader.read_file` + `tally` would count it before dedupe (accepted = records)."""

    file: str
    records: pa.Table  # RECORD_SCHEMA, in line order
    line_no: pa.Int64Array
    rejects: list[LocatedReject]
    stats: FileStats
    fallback: int = 0

    @property
    def damaged(self) -> bool:
        return any(r.reason == "corrupt_gzip" for r in self.rejects)


@dataclass(frozen=True)
class FastInboxBatch:
    """`reader.InboxBatch` with the kept records as one Arrow table (`LOCATED_SCHEMA`, ordered by file, line)."""

    records: pa.Table
    rejects: list[LocatedReject]
    stats: dict[str, FileStats] = field(default_factory=dict)
    duplicates: pa.Table | None = None  # (file, line_no, request_id) of every other copy

    def located(self) -> list[Located]:
        """The kept records as `reader.Located` objects (slow: for comparisons and small inboxes)."""
        return [
            Located(row.pop("file"), row.pop("line_no"), RequestRecord(**row)) for row in self.records.to_pylist()
        ]


@dataclass(frozen=True)
class LinesResult:
    """`parse_lines`: one outcome per line (None for a blank line) and whether the SQL path decided it."""

    outcomes: list[RequestRecord | Reject | None]
    fast: list[bool]


class FastReader:
    """A DuckDB connection set up for one reporting zone and one `now`. Not thread-safe; close it when done."""

    def __init__(self, *, tz: ZoneInfo, now: datetime, chunk_bytes: int = CHUNK_BYTES, threads: int | None = None):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        self.tz, self.now, self.chunk_bytes = tz, now, chunk_bytes
        self._sql = model_path(SQL_MODEL).read_text()
        self._con = duckdb.connect()
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        self._max_ts_us = _epoch_us(now + FUTURE_TOLERANCE)
        hours = _tz_hours(tz, _hour(now - TZ_WINDOW), _hour(now + FUTURE_TOLERANCE) + 1)
        self._con.register("request_log_tz_hours_arrow", hours)
        self._con.execute("CREATE TEMP TABLE request_log_tz_hours AS SELECT * FROM request_log_tz_hours_arrow")
        self._con.unregister("request_log_tz_hours_arrow")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> FastReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- files ---------------------------------------------------------------------------------------

    def iter_chunks(self, path: Path, *, inbox_root: Path, name: str | None = None) -> Iterator[Chunk]:
        """Normalise one inbox file chunk by chunk (memory bounded by `chunk_bytes` plus the longest line)."""
        for _, chunk in self.iter_files([path], inbox_root=inbox_root, names=None if name is None else [name]):
            yield chunk

    def iter_files(
        self, paths: Iterable[Path], *, inbox_root: Path, names: Iterable[str] | None = None
    ) -> Iterator[tuple[str, Chunk]]:
        """(file name, chunk) for each file in turn, in order; small files share one SQL run per ~chunk_bytes."""
        pending: list[_Part] = []
        size = 0
        name_iter = iter(names) if names is not None else None
        for path in paths:
            name = next(name_iter) if name_iter is not None else _name(path, inbox_root)
            fallback_key = fallback_key_for(path, inbox_root)
            for frame in _frames(path, self.chunk_bytes):
                if isinstance(frame, _Broken):
                    yield from self._run_parts(pending)
                    pending, size = [], 0
                    detail = f"gzip stream broken after line {frame.line_no} ({frame.error}); re-send the file"
                    reject = LocatedReject(name, frame.line_no + 1, "corrupt_gzip", detail[:300], "")
                    yield name, Chunk(_empty_records(), pa.array([], pa.int64()), [reject], read=1, blank=0, fallback=0)
                    continue
                pending.append(_Part(name, fallback_key, frame))
                size += len(frame.data)
                if size >= self.chunk_bytes:
                    yield from self._run_parts(pending)
                    pending, size = [], 0
        yield from self._run_parts(pending)

    def read_file(self, path: Path, *, inbox_root: Path, name: str | None = None) -> FileResult:
        name = name if name is not None else _name(path, inbox_root)
        chunks = list(self.iter_chunks(path, inbox_root=inbox_root, name=name))
        return _file_result(name, chunks)

    def read_files(self, paths: Iterable[Path], *, inbox_root: Path, names: Iterable[str] | None = None) -> list[FileResult]:
        by_file: dict[str, list[Chunk]] = {}
        paths = list(paths)
        names = list(names) if names is not None else [_name(p, inbox_root) for p in paths]
        for name in names:
            by_file[name] = []
        for name, chunk in self.iter_files(paths, inbox_root=inbox_root, names=names):
            by_file[name].append(chunk)
        return [_file_result(name, chunks) for name, chunks in by_file.items()]

    def read_inbox(self, inbox_root: Path) -> FastInboxBatch:
        """`reader.read_inbox`: every inbox file, named by its inbox-relative POSIX path, deduped."""
        paths = inbox_files(inbox_root)
        names = [path.relative_to(inbox_root).as_posix() for path in paths]
        return tally_tables(self.read_files(paths, inbox_root=inbox_root, names=names))

    # --- lines ---------------------------------------------------------------------------------------

    def parse_lines(self, lines: Sequence[str | bytes], *, fallback_key: str | None) -> LinesResult:
        """Each line (no '\\n' inside) as `parse_line` sees it; None for a blank line."""
        encoded = [line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line) for line in lines]
        if any(b"\n" in line for line in encoded):
            raise ValueError("a line cannot contain '\\n'")
        if not encoded:
            return LinesResult([], [])
        frame = _Frame(b"\n".join(encoded) + b"\n", first_line_no=1, final=True)
        ((_, chunk),) = self._run_parts([_Part("lines", fallback_key, frame)], with_newline=False)
        outcomes: list[RequestRecord | Reject | None] = [None] * len(encoded)
        for line_no, record in zip(chunk.line_no.to_pylist(), _records(chunk.records), strict=True):
            outcomes[line_no - 1] = record
        for reject in chunk.rejects:
            outcomes[reject.line_no - 1] = Reject(reject.reason, reject.detail)
        return LinesResult(outcomes, [bool(x) for x in self._last_fast_mask])

    # --- internals -----------------------------------------------------------------------------------

    def _run_parts(self, parts: list[_Part], with_newline: bool = True) -> list[tuple[str, Chunk]]:
        """Normalise the frames of `parts` with one SQL run; one chunk per part, in order."""
        if not parts:
            return []
        framed = [_split(part.frame.data) for part in parts]
        counts = [len(starts) for starts, _ in framed]
        bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        batches = []
        for part, (starts, ends), base in zip(parts, framed, bases[:-1], strict=True):
            lines = _line_array(part.frame.data, starts, ends)
            keep = None
            if not _valid_utf8(lines):  # rare: the lines that are not UTF-8 go to Python (it rejects them)
                keep = np.ones(len(starts), dtype=bool)
                for i in range(len(starts)):
                    try:
                        part.frame.data[starts[i] : ends[i]].decode("utf-8")
                    except UnicodeDecodeError:
                        keep[i] = False
            count = len(starts)
            batch = pa.record_batch(
                [
                    pa.array(np.arange(base, base + count, dtype=np.int64)),
                    lines,
                    pa.array([part.fallback_key] * count, pa.string()) if count else pa.array([], pa.string()),
                ],
                names=["line_no", "line", "fallback_key"],
            )
            if keep is not None:
                batch = batch.filter(pa.array(keep))
            for offset in range(0, batch.num_rows, BATCH_ROWS):
                batches.append(batch.slice(offset, BATCH_ROWS))
        schema = pa.schema([("line_no", pa.int64()), ("line", pa.large_string()), ("fallback_key", pa.string())])
        fast = self._run_sql(pa.Table.from_batches(batches, schema=schema))
        rows = fast.column("line_no").to_numpy()
        is_fast = np.zeros(int(bases[-1]), dtype=bool)
        is_fast[rows] = True
        self._last_fast_mask = is_fast
        records_all = _as_records(fast)
        cuts = np.searchsorted(rows, bases)
        out = []
        for k, (part, (starts, ends)) in enumerate(zip(parts, framed, strict=True)):
            lo, hi = int(cuts[k]), int(cuts[k + 1])
            first = part.frame.first_line_no
            records = records_all.slice(lo, hi - lo)
            record_line_no = pa.array(rows[lo:hi] - bases[k] + first, pa.int64())
            out.append((part.name, self._fallback(part, starts, ends, is_fast[bases[k] : bases[k + 1]],
                                                  records, record_line_no, with_newline)))  # fmt: skip
        return out

    def _fallback(
        self,
        part: _Part,
        starts: np.ndarray,
        ends: np.ndarray,
        is_fast: np.ndarray,
        records: pa.Table,
        record_line_no: pa.Int64Array,
        with_newline: bool,
    ) -> Chunk:
        """Every line the SQL did not decide, through reader's own per-line code; merged in line order."""
        buf, first = part.frame.data, part.frame.first_line_no
        rejects: list[LocatedReject] = []
        slow_records: list[RequestRecord] = []
        slow_line_no: list[int] = []
        blank = 0
        for i in np.flatnonzero(~is_fast).tolist():
            end = ends[i] + 1 if with_newline and ends[i] < len(buf) else ends[i]  # reader passes the '\n' too
            result = _line_result(first + i, buf[starts[i] : end], part.fallback_key, self.tz, self.now)
            outcome = result.outcome
            if outcome is None:
                blank += 1
            elif isinstance(outcome, Reject):
                rejects.append(LocatedReject(part.name, result.line_no, outcome.reason, outcome.detail, result.raw))
            else:
                slow_records.append(outcome)
                slow_line_no.append(result.line_no)
        if slow_records:
            records = pa.concat_tables([records, records_to_table(slow_records)])
            record_line_no = pa.concat_arrays([record_line_no, pa.array(slow_line_no, pa.int64())])
            order = pa.array(np.argsort(record_line_no.to_numpy(), kind="stable"))
            records, record_line_no = records.take(order), record_line_no.take(order)
        count = len(starts)
        return Chunk(records, record_line_no, rejects, read=count - blank, blank=blank, fallback=int((~is_fast).sum()))

    def _run_sql(self, source: pa.Table) -> pa.Table:
        self._con.register("request_log_lines", source)
        try:
            params = {"max_ts_us": self._max_ts_us, "ws": _WHITESPACE}
            return self._con.sql(self._sql, params=params).to_arrow_table()
        finally:
            self._con.unregister("request_log_lines")


# --- module-level conveniences ----------------------------------------------------------------------------


def iter_file_chunks(path: Path, *, inbox_root: Path, tz: ZoneInfo, now: datetime) -> Iterator[Chunk]:
    with FastReader(tz=tz, now=now) as reader:
        yield from reader.iter_chunks(path, inbox_root=inbox_root)


def read_file_fast(path: Path, *, inbox_root: Path, tz: ZoneInfo, now: datetime) -> FileResult:
    """`reader.read_file` for one file, records as an Arrow table."""
    with FastReader(tz=tz, now=now) as reader:
        return reader.read_file(path, inbox_root=inbox_root)


def read_inbox_fast(inbox_root: Path, *, tz: ZoneInfo, now: datetime) -> FastInboxBatch:
    """`reader.read_inbox`, records as an Arrow table."""
    with FastReader(tz=tz, now=now) as reader:
        return reader.read_inbox(inbox_root)


def parse_lines_fast(
    lines: Sequence[str | bytes], *, fallback_key: str | None, tz: ZoneInfo, now: datetime
) -> LinesResult:
    with FastReader(tz=tz, now=now) as reader:
        return reader.parse_lines(lines, fallback_key=fallback_key)


def tally_tables(files: Iterable[FileResult]) -> FastInboxBatch:
    """`reader.tally` for Arrow records: dedupe across files with `reader.dedupe`'s winner rule, count per file."""
    results = list(files)
    stats = {r.file: FileStats(read=r.stats.read, blank=r.stats.blank, rejected=r.stats.rejected) for r in results}
    rejects = [reject for r in results for reject in r.rejects]
    damaged = {r.file for r in results if r.damaged}
    tables = [
        pa.Table.from_arrays(
            [pa.array([r.file] * r.records.num_rows, pa.string()), r.line_no, *r.records.columns],
            schema=LOCATED_SCHEMA,
        )
        for r in results
    ]
    located = pa.concat_tables(tables) if tables else LOCATED_SCHEMA.empty_table()
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("located", located)
        con.register("damaged", pa.table({"file": pa.array(sorted(damaged), pa.string())}))
        con.execute(
            """
            CREATE TEMP TABLE ranked AS
            SELECT *, row_number() OVER (
                       PARTITION BY request_id
                       ORDER BY usage_status = 'unknown', file IN (SELECT file FROM damaged), file, line_no
                   ) AS copy_rank
            FROM located
            """
        )
        kept = con.sql("SELECT * EXCLUDE (copy_rank) FROM ranked WHERE copy_rank = 1 ORDER BY file, line_no")
        kept = kept.to_arrow_table().cast(LOCATED_SCHEMA)
        duplicates = con.sql(
            "SELECT file, line_no, request_id FROM ranked WHERE copy_rank > 1 ORDER BY file, line_no"
        ).to_arrow_table()
        per_file = con.sql(
            "SELECT file, count(*) FILTER (copy_rank = 1), count(*) FILTER (copy_rank > 1) FROM ranked GROUP BY file"
        ).fetchall()
    finally:
        con.close()
    for file, accepted, duplicated in per_file:
        stats[file].accepted += accepted
        stats[file].duplicates += duplicated
    return FastInboxBatch(records=kept, rejects=rejects, stats=stats, duplicates=duplicates)


# --- framing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    data: bytes  # whole lines; only a file's last frame may end without '\n'
    first_line_no: int
    final: bool


@dataclass(frozen=True)
class _Part:
    name: str
    fallback_key: str | None
    frame: _Frame


@dataclass(frozen=True)
class _Broken:
    line_no: int  # lines yielded before the break
    error: BaseException


def _frames(path: Path, chunk_bytes: int) -> Iterator[_Frame | _Broken]:
    """The file as frames of whole lines, ~`chunk_bytes` each; a broken gzip stream ends with `_Broken`."""
    compressed = path.name.lower().endswith(".gz")
    line_no = 1
    carry = b""
    pieces: list[bytes] = []
    size = 0
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
        while True:
            try:
                piece = handle.read1(GZIP_READ) if compressed else handle.read(chunk_bytes)
            except (OSError, EOFError, zlib.error) as exc:
                if not compressed:
                    raise
                # reader.read_file yields every complete line decoded before the break, then the reject.
                data = carry + b"".join(pieces)
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield _Frame(data[:cut], line_no, final=False)
                    line_no += data.count(b"\n", 0, cut)
                yield _Broken(line_no - 1, exc)
                return
            if piece:
                pieces.append(piece)
                size += len(piece)
                if size < chunk_bytes:
                    continue
            data = carry + b"".join(pieces)
            pieces, size = [], 0
            if not piece:  # end of the file: the last line may lack its '\n'
                if data:
                    yield _Frame(data, line_no, final=True)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk: keep reading
                carry = data
                continue
            carry = data[cut:]
            frame = data[:cut] if carry else data
            yield _Frame(frame, line_no, final=False)
            line_no += frame.count(b"\n")


def _split(buf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the lines of `buf`; ends exclude the '\\n'; a last line may lack one."""
    newlines = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)
    starts = np.empty(len(newlines) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = newlines + 1
    ends = np.empty(len(newlines) + 1, dtype=np.int64)
    ends[: len(newlines)] = newlines
    ends[-1] = len(buf)
    if starts[-1] == len(buf):  # `buf` ends with '\\n': no partial line after it
        return starts[:-1], ends[:-1]
    return starts, ends


def _line_array(buf: bytes, starts: np.ndarray, ends: np.ndarray) -> pa.LargeStringArray:
    """The lines as a LargeStringArray over `buf` (no copy): value i is line i with its '\n' (JSON whitespace)."""
    count = len(starts)
    if count == 0:
        return pa.array([], pa.large_string())
    offsets = np.empty(count + 1, dtype=np.int64)
    offsets[:count] = starts
    offsets[count] = ends[-1] + 1 if ends[-1] < len(buf) else ends[-1]
    return pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(buf))


def _valid_utf8(lines: pa.Array) -> bool:
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


# --- records ----------------------------------------------------------------------------------------------


def _as_records(fast: pa.Table) -> pa.Table:
    """The SQL's rows as `RECORD_SCHEMA` (ts is a UTC TIMESTAMP there)."""
    columns = []
    for f in RECORD_SCHEMA:
        column = fast.column(f.name)
        if f.name == "ts":
            column = column.cast(pa.timestamp("us")).cast(f.type)
        elif column.type != f.type:
            column = column.cast(f.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=RECORD_SCHEMA)


def _empty_records() -> pa.Table:
    return RECORD_SCHEMA.empty_table()


def _records(table: pa.Table) -> list[RequestRecord]:
    return [RequestRecord(**row) for row in table.to_pylist()]


def _file_result(name: str, chunks: list[Chunk]) -> FileResult:
    records = pa.concat_tables([c.records for c in chunks]) if chunks else _empty_records()
    line_no = pa.concat_arrays([c.line_no for c in chunks]) if chunks else pa.array([], pa.int64())
    rejects = [r for c in chunks for r in c.rejects]
    stats = FileStats(read=sum(c.read for c in chunks), blank=sum(c.blank for c in chunks), rejected=len(rejects))
    return FileResult(name, records, line_no, rejects, stats, fallback=sum(c.fallback for c in chunks))


def _name(path: Path, inbox_root: Path) -> str:
    try:
        return path.relative_to(inbox_root).as_posix()
    except ValueError:
        return path.as_posix()


# --- time ---------------------------------------------------------------------------------------------------


def _epoch_us(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _hour(moment: datetime) -> int:
    return _epoch_us(moment) // (3600 * _US)


_TZ_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _tz_hours_cached(tz: ZoneInfo, first: int, last: int) -> pa.Table:
    """Each UTC hour in [first, last) during which `tz` keeps one offset, with that offset (zoneinfo's)."""
    starts = [datetime.fromtimestamp(h * 3600, tz=tz).utcoffset() for h in range(first, last + 1)]
    hours, offsets = [], []
    for i, h in enumerate(range(first, last)):
        offset = starts[i]
        if offset != starts[i + 1]:
            # a change at or inside this hour: keep the hour only if it happens exactly at its end
            end = datetime.fromtimestamp(h * 3600 + 3600, tz=tz) - timedelta(microseconds=1)
            if end.utcoffset() != offset:
                continue
        hours.append(h)
        offsets.append(int(offset.total_seconds()))
    return pa.table({"hour": pa.array(hours, pa.int64()), "offset_s": pa.array(offsets, pa.int32())})


def _tz_hours(tz: ZoneInfo, first: int, last: int) -> pa.Table:
    with _TZ_LOCK:
        return _tz_hours_cached(tz, first, last)
