"""Request-log ingestion benchmark (issue 3): our ingestion against the baselines, on the same files.

    .venv/bin/python bench/ingest.py --lines 1000000 [--runs 3] [--engines ours,duckdb,pyarrow,pandas]
    .venv/bin/python bench/ingest.py --lines 1000000 --phases     # ours: import, hashing, staging
    .venv/bin/python bench/ingest.py --lines 1000000 --profile 5  # ours: CPU per line, step by step

Generates a mixed-shape inbox with the simulator (`generate_traffic` + `write_inbox`; not timed; cached under
bench/out/, git-ignored), then runs each engine `--runs` times in a fresh subprocess and reports the median
rows/s and the peak RSS (the child's own VmHWM, plus for ours its worker processes: see `_peak_rss`):

- ours:    the pipeline's staging step, as the inbox asset runs it (request_log_lake.stage_files: the files
           shared by two worker processes; per file parse, normalise, write records and rejects)
- duckdb:  bare read_json (explicit envelope schema, response JSON) -> COPY TO Parquet
- pyarrow: pyarrow.json.read_json (explicit envelope schema; the mixed response bodies cannot be typed, so
           they are dropped: less work than the others) -> write_table, per file
- pandas:  naive read_json(lines=True) -> to_parquet, per file, the response dicts re-serialised with
           json.dumps (mixed shapes cannot become one Parquet struct) (only at <= 1M lines)

The machine is shared: expect noise; the median of the runs is reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
NOW = datetime(2026, 4, 1, tzinfo=timezone.utc)
DAYS = 10
LINES_PER_REQUEST = 0.955  # the simulator logs ~95% of its requests to the inbox
ENVELOPE = {
    "request_id": "VARCHAR", "ts": "VARCHAR", "key_name": "VARCHAR", "model": "VARCHAR", "endpoint": "VARCHAR",
    "status": "INTEGER", "source_ip": "VARCHAR", "latency_ms": "BIGINT", "response": "JSON",
}  # fmt: skip


def inbox_for(lines: int) -> Path:
    """The cached simulator inbox of about `lines` lines."""
    sys.path.insert(0, str(ROOT))
    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.traffic import generate_traffic

    inbox = OUT / f"inbox-{lines}"
    marker = inbox / ".complete.json"
    if marker.exists():
        return inbox
    per_day = math.ceil(lines / DAYS / LINES_PER_REQUEST)
    started = time.perf_counter()
    counts = write_inbox(generate_traffic(seed=7, start=date(2026, 1, 1), days=DAYS, requests_per_day=per_day), inbox)
    marker.write_text(json.dumps({"lines": counts["lines"], "files": counts["files"], "by_shape": counts["by_shape"]}))
    print(f"generated {counts['lines']} lines in {counts['files']} files ({time.perf_counter() - started:.0f} s)")
    return inbox


def files_of(inbox: Path) -> list[Path]:
    return sorted(p for p in inbox.rglob("*") if p.is_file() and not p.name.startswith("."))


# --- one measured run (in a child process) ---------------------------------------------------------------


def run_engine(engine: str, inbox: Path, out: Path) -> int:
    """Read + normalise/convert + write Parquet; returns the rows read (lines)."""
    files = files_of(inbox)
    if engine == "ours":
        # What the pipeline's staging step does: hash every file, parse every line, write the staged
        # records per file. The lake starts empty: each run measures the full work.
        import shutil
        from datetime import UTC, datetime

        from pipelines.lib.request_logs import lake as request_log_lake

        lake = out.with_suffix("")
        shutil.rmtree(lake, ignore_errors=True)
        items = request_log_lake.pending_files(lake, inbox)
        staged = list(request_log_lake.stage_files(lake, inbox, items, datetime.now(UTC)))
        return sum(s.lines_read for s in staged)
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        columns = "{" + ", ".join(f"{k}: '{v}'" for k, v in ENVELOPE.items()) + "}"
        sql = f"""COPY (SELECT * FROM read_json($files, format = 'newline_delimited', columns = {columns}))
                  TO '{out}' (FORMAT parquet)"""
        return con.execute(sql, {"files": [str(p) for p in files]}).fetchone()[0]
    if engine == "pyarrow":
        import pyarrow as pa
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        types = {"VARCHAR": pa.string(), "INTEGER": pa.int32(), "BIGINT": pa.int64()}
        schema = pa.schema([(k, types[v]) for k, v in ENVELOPE.items() if v != "JSON"])
        # "infer" cannot type the mixed response bodies (code: number vs string): the envelope only
        options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        rows = 0
        for i, path in enumerate(files):
            table = pj.read_json(path, parse_options=options)
            pq.write_table(table, out.with_name(f"{out.stem}-{i}.parquet"))
            rows += table.num_rows
        return rows
    if engine == "pandas":
        import pandas as pd

        rows = 0
        for i, path in enumerate(files):
            frame = pd.read_json(path, lines=True)
            frame["response"] = frame["response"].map(json.dumps)  # mixed dict shapes cannot become one struct
            frame.to_parquet(out.with_name(f"{out.stem}-{i}.parquet"))
            rows += len(frame)
        return rows
    raise ValueError(engine)


def profile(inbox: Path, every: int) -> None:
    """CPU time per line of each step of ours, in one process, on every `every`-th file (best of 3),
    beside the CPU time per line of the DuckDB COPY (all its threads): where the time goes."""
    from datetime import UTC, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.lib.request_logs import batch
    from pipelines.lib.request_logs.reader import numbered_blocks

    files = files_of(inbox)[::every]
    blocks = [(first, block) for path in files for first, block in numbered_blocks(path)]
    lines = sum(block.count(b"\n") for _, block in blocks)
    latest = batch._us(datetime.now(UTC) + timedelta(days=1))
    scanned = [batch._scan.scan(block, first, b"k", batch._EARLIEST_US, latest) for first, block in blocks]
    declined = sum(len(d) // 24 for _, _, d in scanned)
    table = pa.concat_tables(batch._scanned_table(rows, columns) for rows, columns, _ in scanned)
    steps = {
        "read blocks (incl. gunzip)": lambda: [list(numbered_blocks(path)) for path in files],
        "compiled scanner (parse + rules)": lambda: [batch._scan.scan(b, f, b"k", batch._EARLIEST_US, latest)
                                                     for f, b in blocks],
        "buffers -> Arrow table": lambda: [batch._scanned_table(rows, columns) for rows, columns, _ in scanned],
        "Parquet write (zstd)": lambda: pq.write_table(table, OUT / "parquet" / "profile.parquet", compression="zstd"),
    }
    print(f"profile: {lines:,} lines from {len(files)} files, one process; {declined:,} declined by the scanner")
    print("| step | CPU us / line |\n|---|---:|")
    total = 0.0
    for name, step in steps.items():
        best = min(_cpu(step) for _ in range(3)) / lines * 1e6
        total += best
        print(f"| {name} | {best:.2f} |")
    print(f"| **sum** | **{total:.2f}** |")
    import duckdb

    con = duckdb.connect()
    columns = "{" + ", ".join(f"{k}: '{v}'" for k, v in ENVELOPE.items()) + "}"
    sql = f"""COPY (SELECT * FROM read_json($files, format = 'newline_delimited', columns = {columns}))
              TO '{OUT / "parquet" / "profile-duckdb.parquet"}' (FORMAT parquet)"""
    best = min(_cpu(lambda: con.execute(sql, {"files": [str(p) for p in files]})) for _ in range(3))
    print(f"| DuckDB COPY, all threads | {best / lines * 1e6:.2f} |")


def phases(inbox: Path, workers: int) -> dict:
    """Child process: ours, timed phase by phase (import, hashing every file, staging)."""
    import shutil
    from datetime import UTC

    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from pipelines.lib.request_logs import lake as request_log_lake

    imported = time.perf_counter()
    lake = OUT / "parquet" / f"phases-{workers}"
    shutil.rmtree(lake, ignore_errors=True)
    items = request_log_lake.pending_files(lake, inbox)
    hashed = time.perf_counter()
    list(request_log_lake.stage_files(lake, inbox, items, datetime.now(UTC), workers=workers))
    done = time.perf_counter()
    return {"import": imported - started, "hash": hashed - imported, "stage": done - hashed, "total": done - started}


def print_phases(inbox: Path, runs: int) -> None:
    print("| workers | import s | hash s | stage s | total s |\n|---:|---:|---:|---:|---:|")
    for workers in (2, 1):
        timings = [json.loads(subprocess.run(
            [sys.executable, __file__, "--child", f"phases-{workers}", "--inbox", str(inbox), "--out", "-"],
            capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip().splitlines()[-1]) for _ in range(runs)]
        best = min(timings, key=lambda t: t["total"])
        print(f"| {workers} | {best['import']:.2f} | {best['hash']:.2f} | {best['stage']:.2f} | {best['total']:.2f} |")


def _cpu(step) -> float:
    import gc

    gc.collect()
    gc.disable()  # as in the pipeline (batch.normalise_lines)
    try:
        started = time.process_time()
        step()
        return time.process_time() - started
    finally:
        gc.enable()




def child(engine: str, inbox: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    try:
        rows = run_engine(engine, inbox, out)
        error = None
    except Exception as exc:  # a baseline that cannot read these files is reported, not fatal
        rows, error = 0, f"{type(exc).__name__}: {str(exc)[:120]}"
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss": peak, "error": error}))


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the forking parent's high-water mark over exec),
    plus, when it ran worker processes, MAX_WORKERS times the largest worker's peak: an upper bound of the
    whole tree's peak, since the workers run side by side."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) * 1024
    except OSError:
        pass
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if not workers:
        return own
    from pipelines.lib.request_logs.lake import MAX_WORKERS

    return own + MAX_WORKERS * workers


def measure(engine: str, inbox: Path, runs: int) -> dict:
    results = []
    for run in range(runs):
        out = OUT / "parquet" / f"{engine}-{run}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        for old in out.parent.glob(f"{engine}-{run}*.parquet"):
            old.unlink()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", engine, "--inbox", str(inbox), "--out", str(out)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        if result["error"]:
            break
        print(f"  {engine} run {run + 1}: {result['rows']} rows in {result['seconds']:.2f} s", flush=True)
    ok = [r for r in results if not r["error"]]
    if not ok:
        return {"engine": engine, "error": results[-1]["error"]}
    rates = [r["rows"] / r["seconds"] for r in ok]
    return {
        "engine": engine,
        "rows": ok[0]["rows"],
        "seconds": statistics.median(r["seconds"] for r in ok),
        "rows_per_s": statistics.median(rates),
        "peak_rss": max(r["peak_rss"] for r in ok),
        "runs": len(ok),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="ours,duckdb,pyarrow,pandas")
    parser.add_argument("--profile", type=int, metavar="EVERY", help="instead: CPU per line of each step of "
                        "ours on every EVERY-th file, beside the DuckDB COPY's")
    parser.add_argument("--phases", action="store_true", help="instead: ours phase by phase (import, hash, "
                        "stage) with two workers and with one, best of --runs")
    parser.add_argument("--child")
    parser.add_argument("--inbox", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if "pandas" in args.engines.split(",") and importlib.util.find_spec("pandas") is None:
        parser.error("the pandas baseline needs pandas, which the pipeline does not use: "
                     ".venv/bin/pip install -e '.[bench]' (or leave pandas out of --engines)")
    if args.child and args.child.startswith("phases-"):
        print(json.dumps(phases(args.inbox, int(args.child.removeprefix("phases-")))))
        return
    if args.child:
        child(args.child, args.inbox, args.out)
        return
    inbox = inbox_for(args.lines)
    if args.profile:
        sys.path.insert(0, str(ROOT))
        profile(inbox, args.profile)
        return
    if args.phases:
        print_phases(inbox, args.runs)
        return
    meta = json.loads((inbox / ".complete.json").read_text())
    print(f"inbox: {meta['lines']} lines, {meta['files']} files, shapes {meta['by_shape']}; cpus {os.cpu_count()}")
    rows = []
    for engine in args.engines.split(","):
        if engine == "pandas" and args.lines > 1_000_000:
            continue
        rows.append(measure(engine, inbox, args.runs))
    fast = next((r for r in rows if r["engine"] == "ours" and "error" not in r), None)
    print()
    print("| engine | lines | median s | rows/s | peak RSS MiB | ours / this |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['engine']} | - | - | - | - | failed: {r['error']} |")
            continue
        ratio = f"{fast['rows_per_s'] / r['rows_per_s']:.2f}x" if fast else "-"
        print(f"| {r['engine']} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows_per_s']:,.0f} | "
              f"{r['peak_rss'] / 2**20:,.0f} | {ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
