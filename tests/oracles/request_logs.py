"""The reference reader: every line of an inbox file through `parse_line`, one at a time.

What the pipeline's block reader (`reader.read_file_batches`: the compiled scanner, `parse_line` for
the lines it declines) must give, line for line; the request-log tests compare the two. It reads the
file as the pipeline does (`reader.numbered_blocks`, so gzip damage ends it with the same
`corrupt_gzip` reject) and keeps each rejected line's text as the rejects table does (`raw_text`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipelines.lib.request_logs.batch import block_lines
from pipelines.lib.request_logs.normalize import Reject, RequestRecord, parse_line
from pipelines.lib.request_logs.reader import fallback_key_for, numbered_blocks, raw_text


@dataclass(frozen=True, slots=True)
class LineResult:
    """One line: a record, a reject, or None for a blank line. `raw` is kept for rejects only."""

    line_no: int  # 1-based
    outcome: RequestRecord | Reject | None
    raw: str = ""


def read_file(path: Path, *, inbox_root: Path, now: datetime) -> Iterator[LineResult]:
    """`parse_line` on every line of one inbox file, numbered from 1; a broken gzip stream ends with
    one `corrupt_gzip` reject numbered after the last whole line read."""
    fallback_key = fallback_key_for(path, inbox_root)
    for first, block in numbered_blocks(path):
        if isinstance(block, Reject):
            yield LineResult(first, block)
            return
        for line_no, line in enumerate(block_lines(block), first):
            if not line.strip():
                yield LineResult(line_no, None)
                continue
            outcome = parse_line(line, fallback_key=fallback_key, now=now)
            yield LineResult(line_no, outcome, raw_text(line) if isinstance(outcome, Reject) else "")
