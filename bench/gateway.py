"""Gateway ledger benchmark (issue 7): the bulk CSV export against paging at <= 100 rows a call, and
the whole ledger step.

    .venv/bin/python bench/gateway.py --per-day 100000 --days 3 [--runs 3] [--chunk-days 1,3] [--prerendered]

Serves `--days` days of simulated gateway traffic at `--per-day` requests a day from the embedded
simulator, in a process of its own (so the client's CPU and memory are its own), then pulls the whole
window `--runs` times per method, each run in a fresh client subprocess, and reports the median:

- paging:          `gateway.pull.pull_log(export=False)`: `/api/log/self`, page_size 100, p = 1, 2, ...
- export (N d):    `gateway.pull.pull_log(chunk_days=N)`: one `/api/log/self/export` call per N days, plus
                   the one-item page that checks its row count against `total`
- ledger step:     `gateway_lake.land_window`, what the `lake/gateway_logs` asset runs: a day at a time,
                   the export pulled, parsed in bulk (`gateway_fast`), deduplicated, sorted and written to
                   a fresh lake, then the pull record

Timed for paging and export: the pull, from the first call to the last row in memory (an export as
string columns, pages as items); for the ledger step, everything from the first call to the pull
record on disk. Not timed: generating the traffic, and one warm-up call per window so the simulator's
own row lists are built before the clock starts. Every run's rows are reduced to a digest of the
dedup keys; the runs must agree, or the benchmark fails. Client CPU is the child's own process time
(the simulator's work is not in it); peak RSS is the child's own VmHWM.

The simulator renders each export from its Python row objects, ~2 s per day of 100 000 requests, on
its own core: that, not the client, bounds the export rows. `--prerendered` takes it out: each
span's CSV is rendered once during the warm-up and then served from memory (the same bytes), so
the export and ledger rows show the pipeline's own side plus HTTP on loopback.

Loopback has no network latency; the year columns add an assumed round trip per call (`--rtt-ms`,
default 100 ms) to show what the number of calls costs against a real gateway. That figure is
computed, not measured. The simulator serves the export here (`export=True`: CometAPI's own; upstream
has no route) and enforces no rate limit, so the methods are compared on their own work.

    .venv/bin/python bench/gateway.py --rate [--limit 360 --window 180 --calls 800]

The rate-limit benchmark (issue 16): the simulator enforces upstream's sliding window on `/api`
(`--limit` requests per `--window` s per IP, whole unix seconds as upstream counts them) and the
client (`GatewayClient`, paced by `pacing.PacedTransport`) pulls days of ledger until it has made
`--calls` calls. Reported: calls per second over the run against the allowed rate, the 429s the
gateway answered (its own count), and the year of ledger without the export at that pace: 365 days of
100 000 rows is 1 003 calls a day, timed by the measured rate (computed from the measurement).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = date(2026, 1, 1)
SEED = 7
YEAR_DAYS = 365


def window(days: int) -> tuple[int, int]:
    first = int(datetime.combine(START, datetime.min.time(), UTC).timestamp())
    return first, first + days * 86_400 - 1


# --- the simulator, in its own process ------------------------------------------------------------------


def serve(per_day: int, days: int, prerendered: bool) -> None:
    sys.path.insert(0, str(ROOT))
    import threading

    from pipelines.simulator import server as simulator
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    if prerendered:  # each span's CSV once (its row list is cached per span by the simulator), then from memory
        render, rendered = simulator._export_chunks, {}

        def export_chunks(rows):
            key = id(rows)
            if key not in rendered:
                rendered[key] = (rows, list(render(rows)))  # rows kept, so the id stays theirs
            return iter(rendered[key][1])

        simulator._export_chunks = export_chunks

    traffic = generate_traffic(seed=SEED, start=START, days=days, requests_per_day=per_day)
    started = time.perf_counter()
    rows = sum(len(traffic.requests_for_day(START + timedelta(days=i))) for i in range(days))
    with SimulatorServer(traffic, export=True, rate_limit=None) as server:
        print(json.dumps({"url": server.url, "token": server.access_token, "rows": rows,
                          "generated_s": round(time.perf_counter() - started, 1)}), flush=True)
        threading.Event().wait()


def start_simulator(per_day: int, days: int, prerendered: bool) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--per-day", str(per_day), "--days", str(days)]
                            + (["--prerendered"] if prerendered else []), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        raise SystemExit("the simulator did not start")
    return proc, json.loads(line)


def warm_up(sim: dict, days: int, chunks: list[int], prerendered: bool) -> None:
    """One one-item page per window a run will ask for, so the simulator's row lists exist (and with
    `prerendered`, one export of each, so its CSV does)."""
    import httpx

    start_ts, end_ts = window(days)
    spans = {(start_ts, end_ts)}
    for chunk in {*chunks, 1}:  # 1: the ledger step's days
        for a in range(start_ts, end_ts + 1, chunk * 86_400):
            spans.add((a, min(a + chunk * 86_400 - 1, end_ts)))
    with httpx.Client(base_url=sim["url"], timeout=600) as client:
        for a, b in sorted(spans):
            client.get("/api/log/self", params={"p": 1, "page_size": 1, "start_timestamp": a, "end_timestamp": b},
                       headers={"Authorization": f"Bearer {sim['token']}"}).raise_for_status()
            if prerendered:
                client.get("/api/log/self/export", params={"start_timestamp": a, "end_timestamp": b},
                           headers={"Authorization": f"Bearer {sim['token']}"}).raise_for_status()


# --- one measured run (in a child process) ----------------------------------------------------------------


def child(url: str, token: str, days: int, method: str, chunk_days: int) -> None:
    sys.path.insert(0, str(ROOT))
    import tempfile

    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.lib.gateway import lake as gateway_lake
    from pipelines.lib.cometapi.gateway import GatewayClient
    from pipelines.lib.cometapi.http import RetryPolicy
    from pipelines.lib.gateway.pull import pull_log

    start_ts, end_ts = window(days)
    client = GatewayClient(url, token, policy=RetryPolicy(max_attempts=1), timeout=httpx.Timeout(600.0))
    with tempfile.TemporaryDirectory() as lake, client:
        started, cpu_started = time.perf_counter(), time.process_time()
        if method == "ledger":
            last = START + timedelta(days=days - 1)
            _, landed = gateway_lake.land_window(Path(lake), START, last, client=client,
                                                 now=lambda: datetime.now(UTC))
            outcome = {"method": landed.api_method, "calls": landed.api_calls, "rows": landed.rows,
                       "fallbacks": landed.fallbacks}
        else:
            pulled = pull_log(client, start_ts, end_ts, export=method == "export", chunk_days=chunk_days)
            outcome = {"method": pulled.method, "calls": pulled.calls, "rows": pulled.items,
                       "fallbacks": pulled.fallbacks}
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        peak_rss = _peak_rss()  # before the digest reads the rows back
        if method == "ledger":
            key = ["request_id", "log_type", "created_at", "quota_units"]
            rows = pa.concat_tables(pq.read_table(f, columns=key)
                                    for f in sorted(Path(lake).glob("gateway_logs/*/*.parquet")))
        else:
            rows = pa.concat_tables(gateway_lake.chunk_records(chunk)[0] for chunk in pulled.chunks)
    created = [int(t.timestamp()) for t in rows["created_at"].to_pylist()]
    keys = sorted(zip(rows["request_id"].to_pylist(), rows["log_type"].to_pylist(), created,
                      rows["quota_units"].to_pylist(), strict=True))
    digest = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]
    print(json.dumps(outcome | {"seconds": seconds, "cpu": cpu, "peak_rss": peak_rss, "digest": digest}))


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the forking parent's high-water mark over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(sim: dict, days: int, method: str, chunk_days: int, runs: int) -> dict:
    results = []
    for run in range(runs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", method, "--url", sim["url"], "--token", sim["token"],
             "--days", str(days), "--chunk", str(chunk_days)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["fallbacks"]:
            raise SystemExit(f"{method} fell back to paging: {result['fallbacks']}")
        results.append(result)
        print(f"  {label(method, chunk_days)} run {run + 1}: {result['calls']} calls, {result['rows']} rows "
              f"in {result['seconds']:.2f} s", flush=True)
    return {
        "label": label(method, chunk_days),
        "calls": results[0]["calls"],
        "rows": results[0]["rows"],
        "seconds": statistics.median(r["seconds"] for r in results),
        "cpu": statistics.median(r["cpu"] for r in results),
        "peak_rss": max(r["peak_rss"] for r in results),
        "digests": {r["digest"] for r in results},
    }


def label(method: str, chunk_days: int) -> str:
    if method == "ledger":
        return "ledger step (export, a day at a time: pull, parse, write)"
    return "paging (100 rows/call)" if method == "paging" else f"export ({chunk_days}-day chunks)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk-days", default="1,3", help="export chunk lengths to measure, comma-separated")
    parser.add_argument("--rtt-ms", type=float, default=100.0, help="assumed round trip per call for the year figure")
    parser.add_argument("--prerendered", action="store_true",
                        help="serve each export from memory after rendering it once (the pipeline's side alone)")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--child")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--chunk", type=int, default=1)
    parser.add_argument("--rate", action="store_true", help="the rate-limit benchmark instead")
    parser.add_argument("--limit", type=int, default=360)
    parser.add_argument("--window", type=float, default=180.0)
    parser.add_argument("--calls", type=int, default=800)
    args = parser.parse_args()
    if args.rate:
        rate(args.limit, args.window, args.calls)
        return
    if args.serve:
        serve(args.per_day, args.days, args.prerendered)
        return
    if args.child:
        child(args.url, args.token, args.days, args.child, args.chunk)
        return

    chunks = [int(c) for c in args.chunk_days.split(",")]
    proc, sim = start_simulator(args.per_day, args.days, args.prerendered)
    try:
        print(f"simulator: {sim['rows']:,} ledger rows over {args.days} days at {args.per_day:,} requests/day "
              f"(generated in {sim['generated_s']} s, not timed); cpus {os.cpu_count()}", flush=True)
        warm_up(sim, args.days, chunks, args.prerendered)
        rows = [measure(sim, args.days, "paging", 1, args.runs)]
        rows += [measure(sim, args.days, "export", c, args.runs) for c in chunks]
        rows.append(measure(sim, args.days, "ledger", 1, args.runs))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    digests = set().union(*(r["digests"] for r in rows))
    if len(digests) != 1:
        raise SystemExit(f"the methods disagree on the rows: {digests}")

    scale = YEAR_DAYS / args.days
    rtt = args.rtt_ms / 1000
    print()
    print(f"Measured over {args.days} days ({rows[0]['rows']:,} rows, the same rows every run: digest "
          f"{digests.pop()}); the year columns are these x {YEAR_DAYS}/{args.days}, the last one plus "
          f"{args.rtt_ms:g} ms per call (assumed, not measured).")
    print()
    print(f"| method | calls | median s | client CPU s | rows/s | peak RSS MiB | calls / year | "
          f"loopback time / year | + {args.rtt_ms:g} ms/call / year |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        year_calls = r["calls"] * scale
        year_s = r["seconds"] * scale
        print(f"| {r['label']} | {r['calls']:,} | {r['seconds']:.2f} | {r['cpu']:.2f} | "
              f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss'] / 2**20:,.0f} | {year_calls:,.0f} | "
              f"{_duration(year_s)} | {_duration(year_s + year_calls * rtt)} |")  # fmt: skip


def rate(limit: int, window_s: float, calls: int) -> None:
    """Pull days of ledger through the paced client against upstream's limiter until `calls` calls are made."""
    sys.path.insert(0, str(ROOT))
    from pipelines.lib.cometapi.gateway import GatewayClient
    from pipelines.lib.cometapi.pacing import RateLimit
    from pipelines.lib.gateway.lake import calls_per_day, day_bounds
    from pipelines.lib.gateway.pull import pull_span
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    per_day = 9_000  # 90 pages and 3 more calls a day
    days = calls // calls_per_day(per_day) + 2
    traffic = generate_traffic(seed=SEED, start=START, days=days, requests_per_day=per_day)
    allowed = RateLimit(limit, window_s)
    with SimulatorServer(traffic, rate_limit=(limit, window_s), whole_seconds=True) as sim, \
            GatewayClient(sim.url, sim.access_token, rate_limit=allowed) as client:
        made, started, day = 0, time.perf_counter(), START
        while made < calls:
            chunk = pull_span(client, *day_bounds(day, day), export=False)
            made += chunk.calls
            day += timedelta(days=1)
        elapsed = time.perf_counter() - started
        refused = sim.limiters[0].refused
        pacer = client.transport.api
    # The first `limit` calls go at once (upstream's window starts empty), the next `limit` a window (+ the
    # margin) later, and so on: over whole windows the rate is limit / (window + margin).
    year_calls = YEAR_DAYS * calls_per_day(100_000)
    year_s = year_calls / (made / elapsed) if made > limit else allowed.seconds_for(year_calls)
    print("| limit | calls | seconds | calls/s | allowed calls/s | share of allowed | 429s | held back s | "
          "year without export (365 x 1 003 calls) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {limit} per {window_s:g} s | {made:,} | {elapsed:.1f} | {made / elapsed:.3f} | {allowed.per_second:.3f} | "
          f"{made / elapsed / allowed.per_second:.1%} | {refused} | {pacer.waited_s:.1f} | "
          f"{year_calls:,} calls, {_duration(year_s)} (pacer's arithmetic: {_duration(allowed.seconds_for(year_calls))}) |")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
