"""The daily run, end to end (issue 18): `comet-ledger run` for the day after a backfilled history.

    .venv/bin/python bench/daily.py --days 30 --per-day 20000 --runs 5 [--tree OTHER_CHECKOUT ...]

1. The simulator's traffic for --days reporting days at --per-day requests; its client logs for all
   but the last day are written into an inbox (cached under bench/out/, git-ignored; not timed).
2. Per code tree (this checkout, and each --tree, e.g. an export of an earlier commit: the same
   simulator serves all of them): a prepared home, backfilled with `comet-ledger backfill` for every
   day but the last, with the gateway ledger (not timed).
3. Each timed run: a fresh copy of the tree's prepared home (and its Dagster instance), the last
   day's client logs delivered into its inbox, then `comet-ledger run --date <last day>` (that day
   and the 3 before it, as the daily schedule does) in its own process, wall time from start to
   exit, and CPU time (user + system) of that process and the processes it waited for. Runs go
   round-robin over the trees, so a noisy spell on the shared machine falls on all.

Reported: each tree's median wall and CPU seconds and every run's, and the load average before and
after. On a loaded machine CPU time is the steadier figure: wall time also counts waiting for a core.
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


def environment(tree: Path, home: Path, sim, prices: Path, last: date) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMETAPI_", "COMET_LEDGER_", "DAGSTER_"))}
    return env | {
        "PYTHONPATH": str(tree),
        "COMET_LEDGER_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "COMETAPI_QUERY_URL": sim.url,
        "COMETAPI_API_URL": sim.url,
        "COMETAPI_KEY": sim.api_key,
        "COMETAPI_ACCESS_TOKEN": sim.access_token,
        "COMET_LEDGER_PRICES": str(prices),
        "COMET_LEDGER_KEY_OWNERS": str(ROOT / "config" / "key_owners.csv"),
        "COMET_LEDGER_START_DATE": "2020-01-01",
        "COMET_LEDGER_NOW": f"{last + timedelta(days=1)}T06:15:00+00:00",
    }


def cli(*args: str) -> list[str]:
    """`comet-ledger ARGS` of the tree the process runs in (its cwd and PYTHONPATH)."""
    return [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 9, 1))
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to time the same way (default: only this one)")
    args = parser.parse_args()

    from pipelines.simulator.catalog import prices_csv
    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    last = args.start + timedelta(days=args.days - 1)
    traffic = generate_traffic(seed=7, start=args.start, days=args.days, requests_per_day=args.per_day)
    cache = OUT / f"daily-{args.days}x{args.per_day}"
    history = cache / "inbox-history"
    if not (cache / "inbox.done").exists():
        shutil.rmtree(cache, ignore_errors=True)
        history.mkdir(parents=True)
        write_inbox(traffic, history, days=traffic.dates[:-1])
        write_inbox(traffic, cache / "inbox-last", days=traffic.dates[-1:])
        (cache / "inbox.done").touch()
    prices = cache / "prices.csv"
    prices.write_text(prices_csv(args.start, args.days))

    trees = [ROOT.resolve(), *(t.resolve() for t in args.tree)]
    work = Path(tempfile.mkdtemp(prefix="comet-ledger-daily-"))
    times: dict[str, list[float]] = {str(t): [] for t in trees}
    cpu: dict[str, list[float]] = {str(t): [] for t in trees}
    with SimulatorServer(traffic) as sim:
        sim.mark_restated()
        prepared = {}
        for i, tree in enumerate(trees):
            home = work / f"prepared-{i}"
            shutil.copytree(history, home / "inbox")
            started = time.perf_counter()
            subprocess.run(cli("backfill", "--start", str(args.start), "--end", str(last - timedelta(days=1))),
                           env=environment(tree, home, sim, prices, last), cwd=tree, check=True, capture_output=True)
            print(f"prepared {tree} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            prepared[tree] = home
        load_before = os.getloadavg()
        for run in range(args.runs):
            for tree in trees:
                home = work / "run"
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(prepared[tree], home, symlinks=True)
                shutil.copytree(cache / "inbox-last", home / "inbox", dirs_exist_ok=True)
                started = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(cli("run", "--date", str(last), "--json"),
                                      env=environment(tree, home, sim, prices, last), cwd=tree, capture_output=True,
                                      text=True)
                seconds = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0:
                    raise SystemExit(f"{tree}: run failed: {done.stderr.strip().splitlines()[-1]}")
                used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                times[str(tree)].append(round(seconds, 2))
                cpu[str(tree)].append(round(used, 2))
                print(f"run {run + 1} {tree}: {seconds:.2f} s wall, {used:.2f} s CPU", file=sys.stderr)
        load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"days": args.days, "per_day": args.per_day, "load_before": load_before,
                      "load_after": load_after,
                      "trees": {t: {"median_wall_s": statistics.median(s), "wall_s": s,
                                    "median_cpu_s": statistics.median(cpu[t]), "cpu_s": cpu[t]}
                                for t, s in times.items()}},
                     indent=2))


if __name__ == "__main__":
    main()
