"""A full disk, said in plain words: "no space left on <path>", whoever noticed it first.

A write that fails for lack of space surfaces in many shapes: `OSError: [Errno 28] No space left on
device` from Python, `Error writing bytes to file. Detail: [errno 28] ...` from pyarrow (without the
file), `IO Error: Could not write file ...: No space left on device` from DuckDB, and from the SQLite
storage of Dagster (`DAGSTER_HOME`) `(sqlite3.OperationalError) database or disk is full`, or, when
the journal is what could not grow, only `disk I/O error`. The pipeline's own writes are wrapped in
`writing(path)`, which re-raises such a failure as `NoSpace` naming the folder; the command line
turns Dagster's storage errors into the same words (`explain`), checking the free space when SQLite
only says "disk I/O error" (which other faults cause too).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_NO_SPACE_TEXTS = ("no space left on device", "[errno 28]", "database or disk is full", "disk quota exceeded")
_SQLITE_IO = "disk i/o error"
NEARLY_FULL_BYTES = 64 * 2**20  # below this much free space, SQLite's "disk I/O error" is a full disk


class NoSpace(OSError):
    """A write failed because the disk holding `folder` is full; `str()` is one line saying so."""

    def __init__(self, folder: Path | str, what: str = "") -> None:
        self.folder = str(folder)
        message = f"no space left on {self.folder}" + (f" ({what})" if what else "")
        super().__init__(errno.ENOSPC, message + "; free space there and re-run: nothing half-written was published")

    def __str__(self) -> str:
        return self.strerror


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) says the disk is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc).lower() for text in _NO_SPACE_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@contextmanager
def writing(path: Path | str, what: str = "") -> Iterator[None]:
    """Re-raise a failure of the writes inside as `NoSpace(<folder of path>)` when the disk is full."""
    try:
        yield
    except NoSpace:
        raise
    except Exception as exc:
        if is_no_space(exc):
            raise NoSpace(Path(path).parent, what or f"writing {Path(path).name}") from exc
        raise


def explain(text: str, dagster_home: str | None = None) -> str | None:
    """The one line to print instead of `text` when it reports a full disk, else None.

    A SQLite error is Dagster's run storage, in `dagster_home` (default: $DAGSTER_HOME)."""
    lowered = text.lower()
    if "no space left on " in lowered and "[errno" not in lowered:
        return None  # already said (NoSpace)
    home = dagster_home or os.environ.get("DAGSTER_HOME") or "DAGSTER_HOME"
    if "sqlite3.operationalerror" in lowered or "sqlite" in lowered and _SQLITE_IO in lowered:
        if "database or disk is full" in lowered:
            return f"no space left on {home} (Dagster's run storage: SQLite says the database or disk is full)"
        if _SQLITE_IO in lowered:
            free = _free_bytes(home)
            if free is not None and free < NEARLY_FULL_BYTES:
                return (f"no space left on {home} (Dagster's run storage: SQLite reported a disk I/O error with "
                        f"{free // 2**20} MiB free)")
            shown = "" if free is None else f", {free // 2**20} MiB free"
            return f"disk I/O error in Dagster's run storage at {home} (SQLite{shown}): check that disk"
        return None
    if any(t in lowered for t in _NO_SPACE_TEXTS):
        return "no space left on device (" + text.strip().splitlines()[0][:200] + ")"
    return None


def _free_bytes(folder: str) -> int | None:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
