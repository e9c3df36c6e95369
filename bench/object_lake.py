"""A backfill with the lake on a local S3-compatible server vs on local disk, side by side (issue 24).

    .venv/bin/python bench/object_lake.py --days 30 --per-day 5000 --runs 2

1. The simulator's traffic for --days reporting days at --per-day requests, its client logs written
   into an inbox (cached under bench/out/, git-ignored; not timed). No gateway ledger: its pulls wait
   on the simulated gateway's rate limit, which is the same whatever the lake, and would hide it.
2. A moto S3 server on 127.0.0.1 (tests/deploy/s3_server.py: the `dev` extra), a bucket, a key.
3. Each timed run: a fresh home with a copy of the inbox, then `comet-ledger backfill` of the whole
   window in its own process: once with the lake on local disk, once with
   `COMET_LEDGER_LAKE_URL=s3://bench/run-N` (a new prefix each run, so nothing is cached), alternating,
   wall time from start to exit and CPU time of that process and its children. The moto server's own
   CPU is not counted in either: it stands for a service on another machine, but here it shares the
   cores, so the wall time of the object-storage runs includes it.

Reported: the median wall and CPU seconds of each, every run's, their ratio, and the objects written.
Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "deploy"))


def environment(home: Path, sim, prices: Path, last: date, lake: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_", "AWS_"))}
    return env | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "COMET_LEDGER_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "COMETAPI_QUERY_URL": sim.url,
        "COMETAPI_API_URL": sim.url,
        "COMETAPI_KEY": sim.api_key,
        "COMET_LEDGER_PRICES": str(prices),
        "COMET_LEDGER_KEY_OWNERS": str(ROOT / "config" / "key_owners.csv"),
        "COMET_LEDGER_START_DATE": "2020-01-01",
        "COMET_LEDGER_NOW": f"{last + timedelta(days=1)}T06:15:00+00:00",
        **lake,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 1))
    args = parser.parse_args()

    from pipelines.simulator.catalog import prices_csv
    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic
    from s3_server import S3Server

    last = args.start + timedelta(days=args.days - 1)
    traffic = generate_traffic(seed=7, start=args.start, days=args.days, requests_per_day=args.per_day)
    cache = OUT / f"object-lake-{args.days}x{args.per_day}"
    if not (cache / "inbox.done").exists():
        shutil.rmtree(cache, ignore_errors=True)
        write_inbox(traffic, cache / "inbox")
        (cache / "inbox.done").touch()
    prices = cache / "prices.csv"
    prices.write_text(prices_csv(args.start, args.days))

    work = Path(tempfile.mkdtemp(prefix="comet-ledger-object-lake-"))
    wall: dict[str, list[float]] = {"local disk": [], "S3 (moto)": []}
    cpu: dict[str, list[float]] = {"local disk": [], "S3 (moto)": []}
    objects = 0
    with SimulatorServer(traffic) as sim, S3Server(work, bucket="bench") as s3:
        load_before = os.getloadavg()
        for run in range(args.runs):
            for name in wall:
                lake = {} if name == "local disk" else {"COMET_LEDGER_LAKE_URL": f"s3://bench/run-{run}"} | s3.env()
                home = work / "home"
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(cache / "inbox", home / "inbox")
                started = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(
                    [sys.executable, "-m", "pipelines.cli", "backfill", "--start", str(args.start), "--end", str(last),
                     "--json"], env=environment(home, sim, prices, last, lake), cwd=ROOT, capture_output=True,
                    text=True)
                seconds = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0:
                    raise SystemExit(f"{name}: backfill failed: {done.stderr.strip().splitlines()[-1]}")
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                wall[name].append(round(seconds, 2))
                cpu[name].append(round(used, 2))
                print(f"run {run + 1} {name}: {seconds:.2f} s wall, {used:.2f} s CPU", file=sys.stderr)
        objects = len(s3.keys("run-0/"))
        load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(s) for name, s in wall.items()}
    print(json.dumps({"days": args.days, "per_day": args.per_day, "load_before": load_before,
                      "load_after": load_after, "objects_per_run": objects,
                      "ratio_wall": round(medians["S3 (moto)"] / medians["local disk"], 2),
                      "lakes": {n: {"median_wall_s": medians[n], "wall_s": wall[n],
                                    "median_cpu_s": statistics.median(cpu[n]), "cpu_s": cpu[n]} for n in wall}},
                     indent=2))


if __name__ == "__main__":
    main()
