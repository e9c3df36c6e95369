"""The lake on S3-compatible object storage (`COMET_LEDGER_LAKE_URL=s3://bucket/prefix`).

Object storage has no rename, so a file of the lake is published in two steps:

1. the data object, under a name no other write uses:
   `<prefix>/<dataset>/<column>=<value>/<name>.<version>.parquet`;
2. then the commit record that makes it the current version of its lake path, written last:
   `<prefix>/_commits/<dataset>/<column>=<value>/<name>.parquet/<version>.json`, a small JSON
   object naming the data object (its key, size and when it was committed).

Readers list commit records, never data objects: an object no commit names (a writer killed
between the two steps, a version since replaced) is never read. A lake path with several commit
records (a writer killed after committing a new version, before deleting the older record) is
the one with the greatest version: versions sort by the time they were written. A re-run writes
a new version and commits it, so it converges; `sweep` deletes the data objects no commit names
once they are older than a day (a reader that listed the previous version may still be reading it).

Readers read local files: a committed object is downloaded once into the local cache
(`<COMET_LEDGER_HOME>/lake_cache`, the same relative key), where DuckDB and pyarrow read it like
any file of a local lake. An object is never rewritten under the same name, so a cached copy is
never stale, and the cache can be deleted at any time. The writer puts its own file there as it
commits it, so a daily run downloads nothing it wrote itself. Lake paths under a folder whose name
starts with `_` (`_schemas`, `_cache`: stand-ins and caches of this machine) stay local.

The client is pyarrow's S3 filesystem (credentials from the usual `AWS_*` variables or files;
`AWS_ENDPOINT_URL` for a server other than AWS's, `AWS_REGION` / `AWS_DEFAULT_REGION`). DuckDB's own
S3 support (the httpfs extension) is not used.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

VARIABLE = "COMET_LEDGER_LAKE_URL"
COMMITS = "_commits"
ORPHANS_KEPT_S = 24 * 3600


class LakeUnavailable(RuntimeError):
    """The object storage cannot be used (unreachable, refused credentials, no such bucket): one line."""


def parse_url(raw: str) -> tuple[str, str]:
    """(bucket, prefix without slashes) of `s3://bucket/prefix`; ValueError naming the variable otherwise."""
    parts = urlsplit(raw)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.scheme != "s3" or not bucket or parts.query or parts.fragment or "@" in bucket:
        raise ValueError(f"{VARIABLE}={raw!r} is neither a folder nor an s3://bucket/prefix URL")
    return bucket, prefix


def new_version() -> str:
    """Sortable by the time it was made (the host's clock, as a file's mtime), unique across writers."""
    return f"v{time.time_ns():020d}-{secrets.token_hex(4)}"


def data_key(logical: str, version: str) -> str:
    """`quota_daily/usage_date=D/x.parquet`, v → `quota_daily/usage_date=D/x.v.parquet`."""
    path = PurePosixPath(logical)
    return str(path.with_name(f"{path.stem}.{version}{path.suffix}"))


@dataclass(frozen=True)
class Staged:
    """A data object uploaded but not committed yet (`ObjectLake.stage`)."""

    local: Path  # the local temporary it was uploaded from
    logical: str
    version: str
    size: int


class ObjectLake:
    """One lake on object storage, with its local cache `cache` (the lake root the code passes around)."""

    def __init__(self, url: str, cache: Path, env: dict[str, str] | None = None):
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.cache = cache
        self._env = dict(os.environ if env is None else env)
        self._fs = None
        self._checked = False

    # --- the client -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._env.get("AWS_ENDPOINT_URL_S3") or self._env.get("AWS_ENDPOINT_URL") or "AWS S3"

    def fs(self):
        if self._fs is None:
            from pyarrow import fs as pafs

            endpoint = self._env.get("AWS_ENDPOINT_URL_S3") or self._env.get("AWS_ENDPOINT_URL")
            options: dict = {
                "region": self._env.get("AWS_REGION") or self._env.get("AWS_DEFAULT_REGION") or "us-east-1",
                "connect_timeout": 5.0, "request_timeout": 60.0,
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
                # a small object is one PUT when it is closed (not a three-request multipart upload);
                # errors still surface when the stream is written or closed
                "allow_delayed_open": True,
            }
            key, secret = self._env.get("AWS_ACCESS_KEY_ID"), self._env.get("AWS_SECRET_ACCESS_KEY")
            if key and secret:  # else pyarrow's own chain: ~/.aws files, the instance's role
                options.update(access_key=key, secret_key=secret, session_token=self._env.get("AWS_SESSION_TOKEN"))
            if endpoint:
                parts = urlsplit(endpoint)
                options.update(endpoint_override=parts.netloc or endpoint, scheme=parts.scheme or "https")
            self._fs = pafs.S3FileSystem(**options)
        return self._fs

    def key(self, relative: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, relative) if p)

    def unavailable(self, doing: str, exc: BaseException) -> LakeUnavailable:
        """One line saying what could not be done and why, without the credentials (the error texts of
        the client name the operation and the service's reason, never a key)."""
        text = " ".join(str(exc).split())
        if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text or "bucket does not exist" in text.lower():
            why = f"bucket {self.bucket!r} does not exist"
        elif any(s in text for s in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ACCESS_DENIED", "AccessDenied",
                                     "INVALID_ACCESS_KEY", "SIGNATURE_DOES_NOT_MATCH", "403")):
            why = "the credentials were refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        elif any(s in text.lower() for s in ("connect", "resolve", "timed out", "timeout", "network")):
            why = f"{self.endpoint} cannot be reached"
        else:
            why = text[:200]
        from pipelines.lib.redact import redact

        return LakeUnavailable(redact(f"{VARIABLE}={self.url}: {doing}: {why}"))

    def check(self) -> None:
        """Raise `LakeUnavailable` unless the bucket can be listed with the configured credentials.

        Also run once by the first listing of each process (`_listing`): a missing bucket lists as
        empty, and a lake that lists as empty must never be taken for an empty lake."""
        from pyarrow import fs as pafs

        try:
            info = self.fs().get_file_info(self.bucket)
            if info.type == pafs.FileType.NotFound:
                raise LakeUnavailable(
                    f"{VARIABLE}={self.url}: bucket {self.bucket!r} does not exist at {self.endpoint}")
            self.fs().get_file_info(pafs.FileSelector(self.key(COMMITS), recursive=False, allow_not_found=True))
        except LakeUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError and others; said as one line
            raise self.unavailable("listing the lake", exc) from None
        self._checked = True

    def _listing(self, prefix: str, recursive: bool) -> list:
        from pyarrow import fs as pafs

        if not self._checked:
            self.check()
        try:
            return self.fs().get_file_info(pafs.FileSelector(self.key(prefix), recursive=recursive,
                                                             allow_not_found=True))
        except Exception as exc:  # noqa: BLE001
            raise self.unavailable(f"listing {prefix}", exc) from None

    # --- writing ----------------------------------------------------------------------------------

    def stage(self, local: Path, logical: str) -> Staged:
        """Upload the complete local file `local` as a new version of `logical`; not visible until `commit`."""
        version = new_version()
        size = local.stat().st_size
        try:
            target = self.key(data_key(logical, version))
            with open(local, "rb") as source, self.fs().open_output_stream(target) as sink:
                while chunk := source.read(8 * 2**20):
                    sink.write(chunk)
        except Exception as exc:  # noqa: BLE001
            raise self.unavailable(f"writing {logical}", exc) from None
        return Staged(local, logical, version, size)

    def commit(self, staged: Staged) -> Path:
        """Write the commit record (last), put the local file in the cache, drop older commit records of
        the path; returns the cached file."""
        record = {"path": staged.logical, "object": data_key(staged.logical, staged.version),
                  "version": staged.version, "bytes": staged.size, "committed_at_ns": time.time_ns()}
        try:
            with self.fs().open_output_stream(self._commit_key(staged.logical, staged.version)) as sink:
                sink.write(json.dumps(record).encode())
        except Exception as exc:  # noqa: BLE001
            raise self.unavailable(f"committing {staged.logical}", exc) from None
        cached = self.cache / data_key(staged.logical, staged.version)
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.local, cached)
        for older in self._versions(staged.logical)[:-1]:  # the new one sorts last
            try:
                self.fs().delete_file(self._commit_key(staged.logical, older))
            except Exception:  # noqa: BLE001 - a leftover record is ignored by readers, swept later
                pass
        return cached

    def _commit_key(self, logical: str, version: str) -> str:
        return self.key(f"{COMMITS}/{logical}/{version}.json")

    def _versions(self, logical: str) -> list[str]:
        found = self._listing(f"{COMMITS}/{logical}", recursive=False)
        return sorted(PurePosixPath(f.path).stem for f in found if f.path.endswith(".json"))

    def exists(self, logical: str) -> bool:
        """Whether a version of the lake path `logical` is committed."""
        return bool(self._versions(logical))

    # --- reading ----------------------------------------------------------------------------------

    def committed(self, dataset: str) -> dict[str, str]:
        """lake path → its current version, for every committed file of `dataset`."""
        from pyarrow import fs as pafs

        found = self._listing(f"{COMMITS}/{dataset}", recursive=True)
        current: dict[str, str] = {}
        root = self.key(COMMITS) + "/"
        for info in found:
            if info.type != pafs.FileType.File or not info.path.endswith(".json"):
                continue
            record = PurePosixPath(info.path[len(root):])
            logical, version = str(record.parent), record.stem
            if version > current.get(logical, ""):
                current[logical] = version
        return current

    def local(self, logical: str, version: str) -> Path:
        """The cached copy of one committed version, downloaded when missing."""
        cached = self.cache / data_key(logical, version)
        if cached.is_file():
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{secrets.token_hex(8)}.tmp")
        try:
            with self.fs().open_input_stream(self.key(data_key(logical, version))) as source, open(tmp, "wb") as sink:
                while chunk := source.read(8 * 2**20):
                    sink.write(chunk)
            os.replace(tmp, cached)
        except Exception as exc:  # noqa: BLE001
            tmp.unlink(missing_ok=True)
            raise self.unavailable(f"reading {logical}", exc) from None
        return cached

    def resolve(self, logical: str) -> Path | None:
        """The cached copy of the current version of one lake path, or None when none is committed."""
        versions = self._versions(logical)
        return self.local(logical, versions[-1]) if versions else None

    # --- housekeeping -----------------------------------------------------------------------------

    def _stored_now_ns(self) -> int:
        """Now, as the object storage stamps modification times: the time of a probe object written
        and deleted at once (the host's clock may be off, or faked in tests)."""
        probe = self.key(f"{COMMITS}/.clock-probe.{secrets.token_hex(8)}")
        try:
            with self.fs().open_output_stream(probe) as sink:
                sink.write(b"")
            stamped = self.fs().get_file_info(probe).mtime_ns
            self.fs().delete_file(probe)
        except Exception as exc:  # noqa: BLE001
            raise self.unavailable("reading the storage's clock", exc) from None
        return stamped if stamped is not None else time.time_ns()

    def sweep(self, datasets: list[str], kept_s: float = ORPHANS_KEPT_S) -> list[str]:
        """Delete the data objects of `datasets` that no current commit names and that are older than
        `kept_s` (a writer killed before its commit, versions since replaced), and their copies in the
        local cache; returns their keys."""
        from pyarrow import fs as pafs

        from pipelines.lib import clock

        removed = []
        cutoff_ns = self._stored_now_ns() - int(kept_s * 1e9)
        cache_cutoff = clock.filesystem_now(self.cache) - kept_s
        for dataset in datasets:
            current = {data_key(p, v) for p, v in self.committed(dataset).items()}
            for cached in (self.cache / dataset).glob("*/*.parquet"):
                with contextlib.suppress(FileNotFoundError):
                    name = cached.relative_to(self.cache).as_posix()
                    if name not in current and cached.stat().st_mtime <= cache_cutoff:
                        cached.unlink()
            wanted = {self.key(k) for k in current}
            for info in self._listing(dataset, recursive=True):
                if (info.type == pafs.FileType.File and info.path not in wanted and info.mtime_ns is not None
                        and info.mtime_ns <= cutoff_ns):
                    try:
                        self.fs().delete_file(info.path)
                    except Exception as exc:  # noqa: BLE001
                        raise self.unavailable(f"sweeping {dataset}", exc) from None
                    removed.append(info.path)
        return removed
