"""The monthly budget-review evidence pack (`reports/review-YYYY-MM/`), as plain Python.

`build_pack(...)` reads the warehouse (read-only), the request-log lake and the inbox, and writes
the query-service export (CSV + Parquet), a sample of raw response objects, reconciliation.md /
.html, SVG charts and manifest.json. See `build.py` for the guarantees (atomic, deterministic).
"""

from pipelines.lib.review_pack.build import PackResult, build_pack
from pipelines.lib.review_pack.figures import PackError

__all__ = ["PackError", "PackResult", "build_pack"]
