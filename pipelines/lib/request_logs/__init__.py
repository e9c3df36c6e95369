"""Client-captured request logs: list the inbox and normalise every line of its files (no Dagster here).

`normalize.parse_line` turns one line into a `RequestRecord` or a `Reject` (the definition of every
rule); `batch` normalises whole blocks of lines (the compiled scanner, `parse_line` for the rest);
`reader` lists the inbox and reads its files block by block. Which copy of a request lands is
decided in SQL (sql/staging/stg_copy_ranks.sql). `lake` stages the inbox's files into the lake.
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
)
from pipelines.lib.request_logs.reader import (
    fallback_key_for,
    file_fingerprint,
    inbox_files,
    read_file_batches,
)

__all__ = [
    "DETAIL_FIELDS",
    "RECORD_SCHEMA",
    "REJECT_REASONS",
    "TOKEN_FIELDS",
    "USAGE_FIELDS",
    "USAGE_SHAPES",
    "USAGE_STATUSES",
    "Reject",
    "RequestRecord",
    "fallback_key_for",
    "file_fingerprint",
    "inbox_files",
    "parse_line",
    "read_file_batches",
]
