"""Copies of the published warehouse on the lake's object storage, for analysts on other machines.

With the lake on object storage (`COMET_LEDGER_LAKE_URL=s3://bucket/prefix`), every publish of
`warehouse.duckdb` (`warehouse.publish`, under the writer lock) is also copied there as a version:

- `<prefix>/_warehouse/files/<relation>/usage_date=D/<sha256>.parquet`: the day files the version
  lists (`requests` is a view over them, see `warehouse.py`); named by their content, so each is
  uploaded once and shared by every version that lists it;
- `<prefix>/_warehouse/versions/<version>/warehouse.duckdb` and `.../manifest.json` (the version,
  when it was published, its day files);
- `<prefix>/_warehouse/latest.json`: the manifest of the newest version, written last. A version
  is complete before `latest.json` names it, so a reader never opens half a version.

`open_latest` downloads what `latest.json` names into a folder and points the `requests` view at
the downloaded day files; the analyst opens that copy read-only. Versions are kept: expire old ones
with a lifecycle rule on the `_warehouse/versions/` prefix.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb

from pipelines.lib.lake.store import ObjectLake, new_version

FOLDER = "_warehouse"


def _upload(store: ObjectLake, local: Path, relative: str) -> None:
    with open(local, "rb") as source, store.fs().open_output_stream(store.key(f"{FOLDER}/{relative}")) as sink:
        while chunk := source.read(8 * 2**20):
            sink.write(chunk)


def _put_json(store: ObjectLake, relative: str, value: dict) -> None:
    with store.fs().open_output_stream(store.key(f"{FOLDER}/{relative}")) as sink:
        sink.write(json.dumps(value, indent=1).encode())


def copy_published(store: ObjectLake, warehouse_path: Path) -> str:
    """Copy the just-published warehouse (and the day files it lists) as a new version; `latest.json`
    last. Returns the version. Raises `LakeUnavailable` (one line) when the storage refuses it."""
    from pyarrow import fs as pafs

    from pipelines.lib.warehouse import files_root

    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        listed = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'warehouse_files'").fetchall()
        files = [f for (f,) in con.execute("SELECT file FROM warehouse_files ORDER BY file").fetchall()] \
            if listed[0][0] else []
    version = new_version()
    try:
        held = {info.path for info in store.fs().get_file_info(pafs.FileSelector(
            store.key(f"{FOLDER}/files"), recursive=True, allow_not_found=True))}
        for file in files:
            if store.key(f"{FOLDER}/files/{file}") not in held:
                _upload(store, files_root(warehouse_path) / file, f"files/{file}")
        _upload(store, warehouse_path, f"versions/{version}/warehouse.duckdb")
        manifest = {"version": version, "published_at_ns": time.time_ns(),
                    "warehouse": f"versions/{version}/warehouse.duckdb", "files": files}
        _put_json(store, f"versions/{version}/manifest.json", manifest)
        _put_json(store, "latest.json", manifest)
    except Exception as exc:  # noqa: BLE001 - said as one line, without credentials
        raise store.unavailable("copying the published warehouse", exc) from None
    return version


def open_latest(store: ObjectLake, folder: Path) -> tuple[Path, dict]:
    """Download the latest published version into `folder` (day files already there are kept) and
    point its views at them; returns (the warehouse file, its manifest)."""
    from pipelines.lib import warehouse

    try:
        with store.fs().open_input_stream(store.key(f"{FOLDER}/latest.json")) as source:
            manifest = json.loads(source.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{store.url}: no published warehouse yet ({FOLDER}/latest.json is missing)") from None
    except Exception as exc:  # noqa: BLE001
        raise store.unavailable("reading the latest published warehouse", exc) from None
    target = folder.absolute() / "warehouse.duckdb"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for file in manifest["files"]:
            local = warehouse.files_root(target) / file
            if not local.is_file():
                _download(store, f"files/{file}", local)
        _download(store, manifest["warehouse"], target)
    except Exception as exc:  # noqa: BLE001
        raise store.unavailable("downloading the latest published warehouse", exc) from None
    warehouse.repoint_files(target)
    os.chmod(target, 0o440)  # a copy to read: nothing writes it back
    return target, manifest


def _download(store: ObjectLake, relative: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{new_version()}.tmp")
    try:
        with store.fs().open_input_stream(store.key(f"{FOLDER}/{relative}")) as source, open(tmp, "wb") as sink:
            while chunk := source.read(8 * 2**20):
                sink.write(chunk)
        if local.exists():
            os.chmod(local, 0o640)
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
