"""Client-captured request logs: read inbox files and normalise every line (no Dagster here).

`normalize` turns one line into a `RequestRecord` or a `Reject`; `reader` streams files, keeps
one record per request_id and counts what happened per file.
"""

from pipelines.lib.request_logs.normalize import (
    DETAIL_FIELDS,
    RECORD_SCHEMA,
    REJECT_REASONS,
    TOKEN_FIELDS,
    USAGE_FIELDS,
    USAGE_SHAPES,
    USAGE_STATUSES,
    Reject,
    RequestRecord,
    parse_line,
    records_to_table,
)
from pipelines.lib.request_logs.reader import (
    Deduped,
    FileStats,
    InboxBatch,
    LineResult,
    Located,
    LocatedReject,
    dedupe,
    fallback_key_for,
    file_fingerprint,
    inbox_files,
    read_file,
    read_inbox,
    tally,
)

__all__ = [
    "DETAIL_FIELDS",
    "RECORD_SCHEMA",
    "REJECT_REASONS",
    "TOKEN_FIELDS",
    "USAGE_FIELDS",
    "USAGE_SHAPES",
    "USAGE_STATUSES",
    "Deduped",
    "FileStats",
    "InboxBatch",
    "LineResult",
    "Located",
    "LocatedReject",
    "Reject",
    "RequestRecord",
    "dedupe",
    "fallback_key_for",
    "file_fingerprint",
    "inbox_files",
    "parse_line",
    "read_file",
    "read_inbox",
    "records_to_table",
    "tally",
]
