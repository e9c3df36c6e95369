"""The commands that run against the embedded CometAPI simulator: `demo` (the whole pipeline, then
its totals checked against the simulator's), `simulate` (the simulator in the foreground) and `dev`
(`dagster dev` on the same data). With them, the simulated world recorded in the data home
(`demo/world.json`, `demo/prices.csv`) and the demo's window. The only module of the command line
that imports pipelines.simulator; it is also the one that points os.environ at a running simulator.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, timedelta
from decimal import Decimal

from pipelines.cli.common import replace_settings, yesterday
from pipelines.cli.pipeline import backfill_with_progress
from pipelines.cli.reports import build_review_pack, record_smoke_test
from pipelines.cli.summary import (
    print_json,
    print_quota_table,
    print_reconciliation,
    print_request_log_summary,
    print_restatements,
    quota_rows,
    request_log_figures,
    window_summary,
)
from pipelines.lib.settings import Settings


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import threading
    from pathlib import Path

    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    last = yesterday(settings)
    traffic = generate_traffic(seed=args.seed, start=last - timedelta(days=args.days - 1), days=args.days)
    if args.inbox:
        written = write_inbox(traffic, Path(args.inbox))
        print(f"wrote client request logs to {args.inbox}: {written}", file=sys.stderr)
    server = SimulatorServer(traffic, port=args.port)
    for kind in args.fault:
        server.faults.add(kind, times=None)
    with server:
        print(f"CometAPI simulator on {server.url} ({args.days} days of traffic ending {last})")
        print(f"  COMETAPI_QUERY_URL={server.url}\n  COMETAPI_API_URL={server.url}")
        print(f"  COMETAPI_KEY={server.api_key}\n  COMETAPI_ACCESS_TOKEN={server.access_token}")
        print("  (simulator credentials, not real secrets)  Ctrl-C stops it.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("simulator stopped", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic

    from pipelines.lib import clock, smoke_test

    first, last = demo_window(settings, args.days)
    if settings.start_date_source != "setting" and (settings.start_date_source == "fallback"
                                                     or first < settings.start_date):
        from pipelines.lib import first_day

        first_day.record(settings.home, first_day.FirstDay(first, "demo", "the first day of the demo's traffic"))
        settings = replace_settings(settings, start_date=first, start_date_source="recorded")
    elif first < settings.start_date:
        settings = replace_settings(settings, start_date=first)
    traffic = generate_traffic(seed=args.seed, start=first, days=args.days)
    settings = _demo_config(settings, args.seed, first, args.days)
    written = write_inbox(traffic, settings.inbox)
    print(f"client request logs in {settings.inbox}: {written['files']} files, {written['lines']} lines", file=sys.stderr)
    with SimulatorServer(traffic) as server:
        if _restatement_already_pulled(settings, traffic):
            server.mark_restated()  # a re-run continues the same simulated world
        _use_simulator(server)
        settings = replace_settings(settings, query_url=server.url, api_url=server.url, api_key=server.api_key,
                            access_token=server.access_token)
        print(f"simulator on {server.url}; data home {settings.home}", file=sys.stderr)
        run_ids: list[str] = []
        backfill_with_progress(settings, first, last, restart=True, run_ids=run_ids)
        from pipelines import runs

        repull_first = max(first, last - timedelta(days=3))
        print(f"daily run for {last} (re-pulls {repull_first} .. {last})", file=sys.stderr)
        run_ids.append(runs.run_range(settings, repull_first, last).run_id)
        truth = {k: v for k, v in server.truth().items() if first <= k[0] <= last}
        smoke = smoke_test.run_from_settings(settings, reviewer="comet-ledger demo")
        record_smoke_test(settings, smoke)
    # The pack to hand over is the last complete month's; the current month's, while it has days in
    # the window, is built too and labelled partial.
    this_month = clock.today(settings.tz).replace(day=1)
    pack = build_review_pack(settings, f"{this_month - timedelta(days=1):%Y-%m}")
    partial = build_review_pack(settings, f"{this_month:%Y-%m}") if last >= this_month else None
    quota = quota_rows(settings, first, last)
    totals = (sum((r[2] for r in quota), Decimal(0)), sum(r[3] for r in quota), sum(r[1] for r in quota))
    expected = (sum((v[0] for v in truth.values()), Decimal(0)), sum(v[1] for v in truth.values()), len(truth))
    if args.json:
        if totals != expected:
            raise RuntimeError(f"warehouse totals {totals} differ from the simulator's {expected}")
        if not smoke.passed:
            raise RuntimeError("the smoke test failed against the simulator: " + "; ".join(smoke.failures))
        print_json({"command": "demo", **window_summary(settings, first, last),
                    "request_logs": request_log_figures(settings),
                    "review_pack": {"month": pack.month, "path": str(pack.path), "coverage": pack.coverage},
                    "partial_review_pack": partial and {"month": partial.month, "path": str(partial.path),
                                                        "coverage": partial.coverage},
                    "smoke_test": {"passed": smoke.passed, "failures": smoke.failures},
                    "matches_simulator": True, "run_ids": run_ids})
        return 0
    print_quota_table(settings, first, last)
    print_restatements(settings, first, last)
    print_request_log_summary(settings)
    print_reconciliation(settings, first, last)
    print(f"review pack, {pack.month} (last complete month): {pack.path} ({pack.coverage})")
    if partial is not None:
        print(f"review pack, {partial.month} (partial month, to {last}): {partial.path} ({partial.coverage})")
    print(f"smoke test: {'passed' if smoke.passed else 'FAILED: ' + '; '.join(smoke.failures)} (in smoke_tests)")
    if totals != expected:
        raise RuntimeError(f"warehouse totals {totals} differ from the simulator's {expected}")
    print(f"matches the simulator exactly: {expected[2]} key-days, {expected[0]} USD, {expected[1]} requests")
    return 0 if smoke.passed else 1


def demo_window(settings: Settings, days: int) -> tuple[date, date]:
    """The demo's reporting days: the `days` complete days ending yesterday."""
    last = yesterday(settings)
    return last - timedelta(days=days - 1), last


def _demo_config(settings: Settings, seed: int, first: date, days: int) -> Settings:
    """Record the simulated world in the data home (`demo/world.json`), so that `comet-ledger dev`
    serves the same one. The simulated gateway bills by its own price list (with a mid-period
    change), which its ledger rows (the ratios applied) and /api/models state: unless
    COMET_LEDGER_PRICES or COMET_LEDGER_PRICE_SOURCES is set, the demo prices from those two sources
    alone, and so does every later run in this home (settings.default_price_sources), from the
    command line or the Dagster UI alike. Key owners default to the shipped file."""
    import json

    from pipelines.lib.settings import SIMULATED_WORLD, default_price_sources

    folder = settings.home / SIMULATED_WORLD.parent
    folder.mkdir(parents=True, exist_ok=True)
    _write_text(settings.home / SIMULATED_WORLD,
                json.dumps({"seed": seed, "first_day": first.isoformat(), "days": days}))
    if not os.environ.get("COMET_LEDGER_PRICE_SOURCES"):
        sources = default_price_sources(settings.home, os.environ.get("COMET_LEDGER_PRICES") or None)
        settings = replace_settings(settings, price_sources=tuple(sources.split(",")))
    if not settings.key_owners_path.exists() and not os.environ.get("COMET_LEDGER_KEY_OWNERS"):
        from pipelines.lib.prices.tables import shipped_config

        settings = replace_settings(settings, key_owners_path=shipped_config("key_owners.csv"))
    if not settings.budgets_path.exists() and not settings.budgets_required:
        from pipelines.lib.prices.tables import shipped_config

        settings = replace_settings(settings, budgets_path=shipped_config("budgets.csv"))
    print(f"prices: {', '.join(settings.price_sources)} (COMET_LEDGER_PRICE_SOURCES; config = {settings.prices_path}); "
          f"key owners: {settings.key_owners_path}", file=sys.stderr)
    return settings


def _recorded_world(settings: Settings) -> tuple[int, date, int] | None:
    """(seed, first day, days) of the simulated world this home holds, if one was recorded."""
    import json

    from pipelines.lib.settings import SIMULATED_WORLD

    path = settings.home / SIMULATED_WORLD
    if not path.is_file():
        return None
    world = json.loads(path.read_text())
    return int(world["seed"]), date.fromisoformat(world["first_day"]), int(world["days"])


def _write_text(path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _restatement_already_pulled(settings: Settings, traffic) -> bool:
    """Whether an earlier demo run in this data home already pulled the planted restatement day."""
    from pipelines.lib.lake import datasets as lake_datasets

    day = traffic.planted["restatement"]["date"]
    return bool(lake_datasets.QUOTA_DAILY.files(settings.lake, [day]))


def _use_simulator(server) -> None:
    """Point this process's configuration at a running simulator (its credentials are not secrets)."""
    os.environ.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                      COMETAPI_ACCESS_TOKEN=server.access_token)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess
    from contextlib import ExitStack
    from pathlib import Path

    from pipelines.simulator.inbox import write_inbox
    from pipelines.simulator.server import SimulatorServer
    from pipelines.simulator.traffic import generate_traffic
    from pipelines.runs import ensure_dagster_home

    use_simulator = args.simulator if args.simulator is not None else not settings.api_key
    env = dict(os.environ, COMET_LEDGER_HOME=str(settings.home))
    env.setdefault("DAGSTER_HOME", str(settings.home / "dagster"))
    ensure_dagster_home(Path(env["DAGSTER_HOME"]))
    with ExitStack() as stack:
        if use_simulator:
            # The world `comet-ledger demo` recorded in this home, else the demo's default one, recorded
            # now: either way the UI's runs see the same traffic and price it the way it is billed.
            world = _recorded_world(settings)
            if world is None:
                world = (7, yesterday(settings) - timedelta(days=29), 30)
                _demo_config(settings, *world)
            seed, first, days = world
            traffic = generate_traffic(seed=seed, start=first, days=days)
            write_inbox(traffic, settings.inbox)
            server = stack.enter_context(SimulatorServer(traffic))
            if _restatement_already_pulled(settings, traffic):
                server.mark_restated()
            env.update(COMETAPI_QUERY_URL=server.url, COMETAPI_API_URL=server.url, COMETAPI_KEY=server.api_key,
                       COMETAPI_ACCESS_TOKEN=server.access_token)
            print(f"simulator on {server.url}: {days} days of traffic from {first} (seed {seed})", file=sys.stderr)
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(args.port)]
        return subprocess.call(command, env=env)
