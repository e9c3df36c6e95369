"""The one Dagster concurrency pool: DuckDB allows a single writer, so warehouse writes queue for it.

Every asset that writes `warehouse.duckdb` declares `pool=WRITER_POOL`. Its limit lives in the
Dagster instance, not in code: `pipelines/runs.py` writes it (`WRITER_POOL_LIMIT`) into the
instance that `comet-ledger` and `make dev` use. Inside a run, the file lock in
`pipelines/lib/warehouse/__init__.py` serialises the writes whatever the instance says.
"""

WRITER_POOL = "duckdb_writer"
WRITER_POOL_LIMIT = 1
