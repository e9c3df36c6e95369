"""The user-edited configuration tables: price versions and key ownership, read and validated.

`load_prices(path)` and `load_key_owners(path)` read the CSVs that `COMET_LEDGER_PRICES` and
`COMET_LEDGER_KEY_OWNERS` point at (`config/prices.csv`, `config/key_owners.csv`; `config/README.md`
tells a user how to edit them) and return pyarrow tables for the warehouse. Anything invalid raises
`ConfigFileError`: one line naming the file, the line (1-based, the header is line 1) and the column.

Price rules (the SQL in `sql/core/requests.sql` implements the pricing; this module guarantees it
gets a table on which that pricing is unambiguous):

- `billing_category` is `token` or `per_call`. A token row needs input and output prices and no
  `per_call_usd`; a per-call row needs `per_call_usd` and no token prices.
- An empty cache price on a token row means "this model has no such tokens", never "free" and never
  "same as input": a request that does report cache-read (or cache-write) tokens > 0 against an
  empty price gets no estimate (NULL) rather than a guessed one. A count of 0 needs no price.
- Optional columns (`OPTIONAL_PRICE_COLUMNS`): a file may leave them out of its header (files
  written before they existed load unchanged, with the same price_version_ids). They price what
  request logs report beyond the classic buckets: 1-hour cache writes, audio and image input
  tokens, and web searches / fetches per request. Token rows only; empty has the cache rule's
  meaning ("no such tokens / requests expected": a request that reports some gets no estimate).
- Prices are non-negative decimals with at most 6 decimal places; `gateway_ratio` is required and
  > 0 (0.8 = CometAPI's default 20 % discount; it multiplies per-call prices too, so use 1 where
  `per_call_usd` already is CometAPI's price).
- `effective_from` (inclusive) is required, `effective_to` (exclusive) is empty for "still in
  force" or a later date; both are reporting days in `COMET_LEDGER_TIMEZONE`. One model's versions
  must neither overlap nor leave a gap between its first and its last version; only the last may be
  open.
- `price_version_id` = `{model}@{effective_from}#{first 8 hex of sha256(canonical row)}`: the same
  content gives the same id whatever the column order or number formatting (`2.5` = `2.500000`);
  any change to a value of the row (prices, ratio, dates, source) gives a new id.

Snapshot rule: a request's model is priced by the row with exactly its name; else by the row named
after removing ONE trailing snapshot suffix, `-YYYY-MM-DD` or `-YYYYMMDD`, recognised by its shape
(`gpt-4.1-nano-2025-04-14` -> `gpt-4.1-nano`, `claude-sonnet-4-20250514` -> `claude-sonnet-4`);
else it is unpriced. The rule is written once, in `sql/core/requests.sql` (`regexp_replace` with the
pattern `SNAPSHOT_SUFFIX_REGEX`, then the exact name before the base name); `tests/oracles/prices.py`
restates it for one name as the tests' check (and runs the pattern in DuckDB).

Key owners: `team` is required, `project` and `cost_center` may be empty; one key's rows must not
overlap, but gaps are allowed: a key is `unassigned` on a day no row covers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from pipelines.lib.settings import ConfigError

PRICES_VARIABLE = "COMET_LEDGER_PRICES"
KEY_OWNERS_VARIABLE = "COMET_LEDGER_KEY_OWNERS"

PRICE_COLUMNS = (
    "model",
    "billing_category",
    "input_usd_per_mtok",
    "output_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "cache_write_usd_per_mtok",
    "per_call_usd",
    "gateway_ratio",
    "effective_from",
    "effective_to",
    "source",
)
TOKEN_PRICE_COLUMNS = PRICE_COLUMNS[2:6]
OPTIONAL_PRICE_COLUMNS = (
    "cache_write_1h_usd_per_mtok",
    "audio_input_usd_per_mtok",
    "image_input_usd_per_mtok",
    "web_search_usd_per_request",
    "web_fetch_usd_per_request",
)
KEY_OWNER_COLUMNS = ("key_name", "team", "project", "cost_center", "effective_from", "effective_to")
BILLING_CATEGORIES = ("token", "per_call")

MONEY = pa.decimal128(18, 6)
PRICES_SCHEMA = pa.schema(
    [
        ("price_version_id", pa.string()),
        ("model", pa.string()),
        ("billing_category", pa.string()),
        ("input_usd_per_mtok", MONEY),
        ("output_usd_per_mtok", MONEY),
        ("cache_read_usd_per_mtok", MONEY),
        ("cache_write_usd_per_mtok", MONEY),
        ("per_call_usd", MONEY),
        ("gateway_ratio", MONEY),
        ("effective_from", pa.date32()),
        ("effective_to", pa.date32()),
        ("source", pa.string()),
        *((column, MONEY) for column in OPTIONAL_PRICE_COLUMNS),
    ]
)
KEY_OWNERS_SCHEMA = pa.schema(
    [
        ("key_name", pa.string()),
        ("team", pa.string()),
        ("project", pa.string()),
        ("cost_center", pa.string()),
        ("effective_from", pa.date32()),
        ("effective_to", pa.date32()),
    ]
)

SNAPSHOT_SUFFIX_REGEX = r"-(\d{4}-\d{2}-\d{2}|\d{8})$"
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SCALE = Decimal("0.000001")  # 6 decimal places, as DECIMAL(18,6) holds
_LIMIT = Decimal(10) ** 12  # DECIMAL(18,6) holds 12 integer digits


class ConfigFileError(ConfigError):
    """An unreadable or invalid config file; str() is one line: file, line, column, reason."""

    def __init__(self, file: str, line: int | None, column: str | None, reason: str, message: str | None = None):
        self.file, self.line, self.column, self.reason = file, line, column, reason
        where = file
        if line is not None:
            where += f" line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(message or f"{where}: {reason}")


@dataclass(frozen=True)
class PriceVersion:
    """One row of the prices CSV, validated. `line` is where it came from (not part of the content)."""

    model: str
    billing_category: str
    input_usd_per_mtok: Decimal | None
    output_usd_per_mtok: Decimal | None
    cache_read_usd_per_mtok: Decimal | None
    cache_write_usd_per_mtok: Decimal | None
    per_call_usd: Decimal | None
    gateway_ratio: Decimal
    effective_from: date
    effective_to: date | None
    source: str | None
    cache_write_1h_usd_per_mtok: Decimal | None = None
    audio_input_usd_per_mtok: Decimal | None = None
    image_input_usd_per_mtok: Decimal | None = None
    web_search_usd_per_request: Decimal | None = None
    web_fetch_usd_per_request: Decimal | None = None
    line: int = field(default=0, compare=False)

    @property
    def price_version_id(self) -> str:
        # an optional column counts only when it holds a price: a row keeps its id in a file without it
        values = [_canonical(getattr(self, column)) for column in PRICE_COLUMNS] + [
            [column, _canonical(getattr(self, column))] for column in OPTIONAL_PRICE_COLUMNS
            if getattr(self, column) is not None]
        canonical = json.dumps(values, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]
        return f"{self.model}@{self.effective_from.isoformat()}#{digest}"


@dataclass(frozen=True)
class KeyOwner:
    """One row of the key owners CSV, validated."""

    key_name: str
    team: str
    project: str | None
    cost_center: str | None
    effective_from: date
    effective_to: date | None
    line: int = field(default=0, compare=False)


# --- public API ---------------------------------------------------------------------------------


def load_prices(path: str | os.PathLike[str]) -> pa.Table:
    """The price versions in `path` as a table with PRICES_SCHEMA, sorted by model, effective_from."""
    versions = read_prices(path)
    return pa.table({c.name: pa.array([getattr(v, c.name) for v in versions], type=c.type) for c in PRICES_SCHEMA})


def load_key_owners(path: str | os.PathLike[str]) -> pa.Table:
    """The key ownership rows in `path` as a table with KEY_OWNERS_SCHEMA, sorted by key_name, effective_from."""
    owners = read_key_owners(path)
    return pa.table({c.name: pa.array([getattr(o, c.name) for o in owners], type=c.type) for c in KEY_OWNERS_SCHEMA})


def read_prices(path: str | os.PathLike[str]) -> list[PriceVersion]:
    """Validated price versions, sorted by model, effective_from."""
    file = _display(path)
    versions = [_price_version(row) for row in _read_rows(path, PRICES_VARIABLE, PRICE_COLUMNS, OPTIONAL_PRICE_COLUMNS)]
    versions.sort(key=lambda v: (v.model, v.effective_from, v.line))
    _check_history(file, versions, lambda v: v.model, "versions of", allow_gaps=False)
    return versions


def read_key_owners(path: str | os.PathLike[str]) -> list[KeyOwner]:
    """Validated key ownership rows, sorted by key_name, effective_from."""
    file = _display(path)
    owners = [_key_owner(row) for row in _read_rows(path, KEY_OWNERS_VARIABLE, KEY_OWNER_COLUMNS)]
    owners.sort(key=lambda o: (o.key_name, o.effective_from, o.line))
    _check_history(file, owners, lambda o: o.key_name, "owner rows of", allow_gaps=True)
    return owners


# --- rows ---------------------------------------------------------------------------------------


class _Row:
    """One data line of a config CSV and the parsers for its cells; failures name file/line/column."""

    def __init__(self, file: str, line: int, cells: dict[str, str]):
        self.file, self.line, self.cells = file, line, cells

    def error(self, column: str | None, reason: str) -> ConfigFileError:
        return ConfigFileError(self.file, self.line, column, reason)

    def raw(self, column: str) -> str:
        return self.cells.get(column, "").strip()  # an optional column the header leaves out is empty

    def name(self, column: str, required: bool = True) -> str | None:
        """An identifier (model, key, team ...): exactly as written, no surrounding spaces."""
        value = self.cells[column]
        if value.strip() == "":
            if required:
                raise self.error(column, "required, but empty")
            return None
        if value != value.strip():
            raise self.error(column, f"{value!r} has surrounding spaces")
        return value

    def text(self, column: str) -> str | None:
        return self.raw(column) or None

    def decimal(self, column: str) -> Decimal | None:
        raw = self.raw(column)
        if raw == "":
            return None
        if not _DECIMAL.fullmatch(raw):
            raise self.error(column, f"{raw!r} is not a decimal number (write e.g. 2.5)")
        value = Decimal(raw)
        if value < 0:
            raise self.error(column, f"{raw} is negative")
        if value >= _LIMIT:
            raise self.error(column, f"{raw} is too large (at most 12 digits before the decimal point)")
        if value != value.quantize(_SCALE):
            raise self.error(column, f"{raw} has more than 6 decimal places")
        return abs(value)  # abs: "-0" is 0

    def day(self, column: str, required: bool) -> date | None:
        raw = self.raw(column)
        if raw == "":
            if required:
                raise self.error(column, "required, but empty (a date in YYYY-MM-DD form)")
            return None
        try:
            if not _ISO_DATE.fullmatch(raw):
                raise ValueError
            return date.fromisoformat(raw)
        except ValueError:
            raise self.error(column, f"{raw!r} is not a date in YYYY-MM-DD form") from None

    def period(self) -> tuple[date, date | None]:
        effective_from = self.day("effective_from", required=True)
        effective_to = self.day("effective_to", required=False)
        if effective_to is not None and effective_to <= effective_from:
            raise self.error(
                "effective_to", f"{effective_to} is not after effective_from {effective_from} (leave it empty while in force)"
            )
        return effective_from, effective_to


def _price_version(row: _Row) -> PriceVersion:
    model = row.name("model")
    category = row.raw("billing_category")
    if category not in BILLING_CATEGORIES:
        raise row.error("billing_category", f"unknown billing category {category!r} (expected token or per_call)")
    priced = (*TOKEN_PRICE_COLUMNS, "per_call_usd", *OPTIONAL_PRICE_COLUMNS)
    prices = {column: row.decimal(column) for column in priced}
    required = ("input_usd_per_mtok", "output_usd_per_mtok") if category == "token" else ("per_call_usd",)
    forbidden = ("per_call_usd",) if category == "token" else (*TOKEN_PRICE_COLUMNS, *OPTIONAL_PRICE_COLUMNS)
    for column in priced:
        if column in required and prices[column] is None:
            raise row.error(column, f"required on a {category} row, but empty")
        if column in forbidden and prices[column] is not None:
            raise row.error(column, f"must be empty on a {category} row (got {row.raw(column)})")
    ratio = row.decimal("gateway_ratio")
    if ratio is None:
        raise row.error("gateway_ratio", "required, but empty (1 = list price, 0.8 = CometAPI's default 20 % discount)")
    if ratio == 0:
        raise row.error("gateway_ratio", f"{row.raw('gateway_ratio')} must be greater than 0")
    effective_from, effective_to = row.period()
    return PriceVersion(
        model=model,
        billing_category=category,
        **prices,
        gateway_ratio=ratio,
        effective_from=effective_from,
        effective_to=effective_to,
        source=row.text("source"),
        line=row.line,
    )


def _key_owner(row: _Row) -> KeyOwner:
    key_name = row.name("key_name")
    team = row.name("team")
    project = row.name("project", required=False)
    cost_center = row.name("cost_center", required=False)
    effective_from, effective_to = row.period()
    return KeyOwner(key_name, team, project, cost_center, effective_from, effective_to, line=row.line)


def _check_history(file: str, rows: list, subject, label: str, allow_gaps: bool) -> None:
    """Consecutive rows of one subject (sorted by effective_from) must not overlap, nor leave gaps unless allowed."""
    for earlier, later in zip(rows, rows[1:]):
        if subject(earlier) != subject(later):
            continue
        spans = f"({_span(earlier)} and {_span(later)})"
        lines = f"{label} {subject(later)} on lines {earlier.line} and {later.line}"
        if earlier.effective_to is None or earlier.effective_to > later.effective_from:
            raise ConfigFileError(file, later.line, "effective_from", f"{lines} overlap {spans}")
        if not allow_gaps and earlier.effective_to < later.effective_from:
            raise ConfigFileError(
                file,
                later.line,
                "effective_from",
                f"{lines} leave a gap {spans}: {earlier.effective_to}..{later.effective_from} has no price",
            )


def _span(row) -> str:
    return f"{row.effective_from}..{row.effective_to or 'open'}"


def _canonical(value) -> str | None:
    if isinstance(value, Decimal):
        return format(value.quantize(_SCALE), "f")
    if isinstance(value, date):
        return value.isoformat()
    return value


# --- files --------------------------------------------------------------------------------------


def _display(path: str | os.PathLike[str]) -> str:
    """The path as the user would write it: relative to the working directory when under it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return str(p)


def _read_rows(path: str | os.PathLike[str], variable: str, columns: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> list[_Row]:
    """The data lines of a config CSV as _Row objects; blank lines (or only commas) are skipped."""
    file = _display(path)
    p = Path(path)
    if not p.is_file():
        reason = "which is not a file" if p.exists() else "which does not exist"
        raise ConfigFileError(file, None, None, reason, message=f"{variable} points at {file}, {reason}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        # Name the line too, as every other error of this module does: a byte offset alone left the
        # user searching a spreadsheet export for the one accented character (the header is line 1).
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigFileError(file, line, None, f"not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    return _parse(file, text, columns, optional)


def _parse(file: str, text: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ConfigFileError(file, 1, None, f"empty file; the first line must be the header {','.join(columns)}") from None
    except csv.Error as exc:
        raise ConfigFileError(file, 1, None, f"not valid CSV ({exc})") from None
    _check_header(file, header, columns, optional)
    rows = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ConfigFileError(file, line, None, f"not valid CSV ({exc})") from None
        if all(cell.strip() == "" for cell in cells):
            continue
        if len(cells) < len(header):
            raise ConfigFileError(file, line, header[len(cells)], f"missing (the line has {len(cells)} fields, the header {len(header)})")
        if len(cells) > len(header):
            raise ConfigFileError(
                file, line, f"#{len(header) + 1}", f"extra field {cells[len(header)]!r} (the header has {len(header)} columns)"
            )
        rows.append(_Row(file, line, dict(zip(header, cells))))
    return rows


def _check_header(file: str, header: list[str], columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    seen: set[str] = set()
    for name in header:
        if name not in columns and name not in optional:
            also = f"; optional: {','.join(optional)}" if optional else ""
            raise ConfigFileError(file, 1, name or "(empty)", f"unknown column (expected {','.join(columns)}{also})")
        if name in seen:
            raise ConfigFileError(file, 1, name, "appears twice in the header")
        seen.add(name)
    for name in columns:
        if name not in seen:
            raise ConfigFileError(file, 1, name, f"missing from the header (expected {','.join(columns)})")


def shipped_config(name: str) -> Path:
    """A default config file as shipped: `config/` in a checkout, `pipelines/_config/` in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "config" / name, here.parents[2] / "_config" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"the shipped config/{name} is missing from this installation")
