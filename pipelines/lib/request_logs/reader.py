"""List the inbox and read its files a block of whole lines at a time.

`read_file_batches` streams one file (`.jsonl`, `.ndjson`, optionally gzipped, gzip possibly
multi-member) in binary, so a line of any length (a big prompt echoed back in the body) is read
whole, and yields what each block's lines became (`batch.normalise_block`). A corrupt or truncated
gzip stream yields the lines decoded before the damage, then ONE `corrupt_gzip` reject numbered where
it broke; no exception escapes. A truncated stream only loses its tail, but gzip checks its CRC at the
end of a member, so bytes flipped inside the data can come through as altered or unreadable lines
before the `corrupt_gzip` reject names the file: such a file is "damaged" and its copies lose every
tie when one copy of each request is chosen (sql/staging/stg_copy_ranks.sql, the one place that rule
is written).

The inbox is listed by `walk_inbox`, which reads only what is the inbox's own: a symbolic link whose
target lies outside the inbox is not followed (it could make the pipeline read, and store the lines
of, any file the service account can read, such as a `.env`), and a name that is not UTF-8 cannot
be stored or reported as text. Both are skipped and reported (`SkippedFile`) and the run goes on.
Links inside the inbox are read where they point; links to folders are never followed (a loop
cannot be walked forever, and the folder's files are listed where they are).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np

from pipelines.lib.redact import redact
from pipelines.lib.request_logs.batch import NUMBERED_SCHEMA, NormalisedLines, normalise_block
from pipelines.lib.request_logs.normalize import Reject

INBOX_SUFFIXES: Final = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
RAW_LIMIT: Final = 2_000  # characters of a rejected line kept for the rejects table
READ_BLOCK: Final = 4 * 2**20  # bytes read at a time from a plain file
GZIP_PIECE: Final = 64 * 2**10  # decompressed bytes read at a time from a gzip stream


def is_export_file(relative: str) -> bool:
    """A console CSV export dropped into `<inbox>/gateway/` (read by the gateway ledger's step)."""
    folder, _, name = relative.partition("/")
    return folder == "gateway" and "/" not in name and name.lower().endswith(".csv") and not name.startswith(".")


# Why an entry of the inbox was not read (the `reason` of a SkippedFile).
SKIP_REASONS: Final = {
    "link_outside_inbox": "a symbolic link whose target is outside the inbox: not followed",
    "name_not_utf8": "a name that is not UTF-8 text: cannot be stored or reported as text",
    "unreadable": "a folder that could not be listed (permissions)",
}


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """An inbox entry that was not read: its inbox-relative name (bytes that are not UTF-8 shown as
    `\\xNN`), why (`SKIP_REASONS`), and a sentence for the operator."""

    file: str
    reason: str
    detail: str


@dataclass(frozen=True)
class InboxListing:
    files: list[Path]  # every regular file the inbox holds, sorted by inbox-relative path
    skipped: list[SkippedFile]  # sorted by name


def walk_inbox(inbox_root: Path) -> InboxListing:
    """Every file under `inbox_root` that is the inbox's own (see the module docstring), and what was
    skipped: links leaving the inbox and non-UTF-8 names, where they would have been read (an inbox
    or export file name, or a folder). Hidden entries are ignored."""
    if not inbox_root.is_dir():
        return InboxListing([], [])
    real_root = os.fsencode(os.path.realpath(inbox_root))
    files: list[Path] = []
    skipped: list[SkippedFile] = []
    pending = [(os.fsencode(inbox_root), b"")]  # bytes throughout: a name need not be text
    while pending:
        folder, relative_folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            skipped.append(_skip(relative_folder, "unreadable", f"skipped: the folder could not be listed "
                                                                f"({exc.strerror})"))
            continue
        for entry in entries:
            if entry.name.startswith(b"."):
                continue
            relative = entry.name if not relative_folder else relative_folder + b"/" + entry.name
            try:
                name = relative.decode("utf-8")
            except UnicodeDecodeError:
                if _would_read(entry, relative.decode("utf-8", "replace")):
                    skipped.append(_skip(relative, "name_not_utf8", "skipped: its name is not UTF-8 text; rename it"))
                continue
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if target != real_root and not target.startswith(real_root + b"/"):
                    if _would_read(entry, name):
                        skipped.append(_skip(relative, "link_outside_inbox", "skipped: a symbolic link to "
                                             "something outside the inbox is not followed"))
                elif entry.is_file():
                    files.append(Path(os.fsdecode(entry.path)))
            elif entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, relative))
            elif entry.is_file(follow_symlinks=False):
                files.append(Path(os.fsdecode(entry.path)))
    files.sort()
    skipped.sort(key=lambda s: s.file)
    return InboxListing(files, skipped)


def _would_read(entry: os.DirEntry, name: str) -> bool:
    """Whether the pipeline would read this entry: an inbox file, an export, or a folder."""
    try:
        is_folder = entry.is_dir(follow_symlinks=True)
    except OSError:
        is_folder = False
    return _is_inbox_name(name) or is_export_file(name) or is_folder


def _skip(relative: bytes, reason: str, detail: str) -> SkippedFile:
    shown = relative.decode("utf-8", "backslashreplace") or "."
    return SkippedFile(shown, reason, detail)


def inbox_files(inbox_root: Path) -> list[Path]:
    """Every inbox file under `inbox_root`, sorted by path (`walk_inbox`: links out of the inbox and
    non-UTF-8 names are skipped; hidden files too)."""
    return [p for p in walk_inbox(inbox_root).files if _is_inbox_name(p.name)]


def _is_inbox_name(name: str) -> bool:
    return name.lower().endswith(INBOX_SUFFIXES)


def fallback_key_for(path: Path, inbox_root: Path) -> str | None:
    """The first folder under the inbox (`inbox/<key_name>/...`), None for files in the root."""
    try:
        relative = path.relative_to(inbox_root)
    except ValueError:
        relative = path.resolve().relative_to(inbox_root.resolve())
    return relative.parts[0] if len(relative.parts) > 1 else None


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes (hex), to recognise a file already ingested."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def numbered_blocks(path: Path, block_bytes: int = READ_BLOCK) -> Iterator[tuple[int, bytes | Reject]]:
    """(number of the block's first line, a block of whole lines) for the whole file; a broken gzip
    stream ends with a `corrupt_gzip` reject numbered after the last whole line read.

    Each block ends with b"\n" except a file's last line when it has none. A block is at least
    `block_bytes` long (a line may span any number of reads) except the last. A gzip stream is
    read one decompressed piece at a time (`read1`), so damage loses at most that piece.
    """
    compressed = path.name.lower().endswith(".gz")
    with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
        read = handle.read1 if compressed else handle.read
        size = min(GZIP_PIECE, block_bytes) if compressed else block_bytes
        line_no = 0  # lines yielded so far
        pending: list[bytes] = []  # pieces read, not yielded yet
        held = 0  # their length
        whole = 0  # how many of their bytes are whole lines
        while True:
            try:
                piece = read(size)
            except (OSError, EOFError, zlib.error) as exc:
                if not compressed:
                    raise
                if whole:
                    block = b"".join(pending)[:whole]
                    yield line_no + 1, block
                    line_no += _newlines(block)
                detail = f"gzip stream broken after line {line_no} ({exc}); re-send the file"
                yield line_no + 1, Reject("corrupt_gzip", detail[:300])
                return
            if not piece:
                if pending:
                    yield line_no + 1, b"".join(pending)
                return
            last = piece.rfind(b"\n")
            if last >= 0:
                whole = held + last + 1
            pending.append(piece)
            held += len(piece)
            if whole >= block_bytes:
                joined = pending[0] if len(pending) == 1 else b"".join(pending)
                block, rest = (joined, b"") if whole == held else (joined[:whole], joined[whole:])
                pending, held, whole = ([rest], len(rest), 0) if rest else ([], 0, 0)
                yield line_no + 1, block
                line_no += _newlines(block)


def _newlines(block: bytes) -> int:
    return int(np.count_nonzero(np.frombuffer(block, np.uint8) == 10))  # ~5x bytes.count


def read_file_batches(
    path: Path, *, inbox_root: Path, now: datetime, block_bytes: int = READ_BLOCK
) -> Iterator[NormalisedLines]:
    """What the lines of one file became, a block at a time (`batch.normalise_block`; gzip damage: module docstring)."""
    fallback_key = fallback_key_for(path, inbox_root)
    for first, block in numbered_blocks(path, block_bytes):
        if isinstance(block, Reject):
            yield NormalisedLines(NUMBERED_SCHEMA.empty_table(), [(first, block, b"")], 0, 0)
            return
        yield normalise_block(block, first, fallback_key=fallback_key, now=now)


def raw_text(line: bytes) -> str:
    """What the rejects table keeps of a line: its first RAW_LIMIT characters, secrets redacted."""
    # A UTF-8 character is at most 4 bytes: this slice always covers RAW_LIMIT characters.
    text = line[: RAW_LIMIT * 4].decode("utf-8", errors="replace").rstrip("\r\n")
    return redact(text[:RAW_LIMIT])
