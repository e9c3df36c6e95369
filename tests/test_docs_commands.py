"""Every command README.md and docs/ show works: each is extracted from the Markdown and run, as
written, by bash, against the simulator, so that none can rot again.

What counts as a command: every line of a ```sh block (a block is one bash script, so heredocs and
loops run whole), and every inline command written with its path (`.venv/bin/...`). A bare
`comet-ledger X` in prose names a command (tests/test_operations_docs.py checks its flags).

Where they run: a scratch checkout (`.venv`, `config/`, `workspace.yaml`, `bench/` linked, and
`pyproject.toml` and `pipelines/`, where `dg` looks; `docs/` copied, since one command rewrites a file
in it) whose `data/` is the data home, as in a fresh clone after `make demo`: the simulator serves 4
reporting days (2026-11-23 .. 2026-11-26) and the clock reads 2026-11-27 06:15 UTC. The home holds the
simulated world's price list (`data/demo/prices.csv`, as the demo writes it); the environment has what
the docs say the operator's shell has: `DAGSTER_HOME` (as `make` sets it), the API variables, pointing
at the simulator, `COMET_LEDGER_START_DATE` and one alert channel, a JSON webhook received on loopback.

What is not run as written, each for a stated reason (the lists are exact: a block added to the
docs is run unless it is added here):
- `CHANGED`: a date range far longer than the simulated days (a year, from 2025) is narrowed to the
  simulated days; the command is otherwise as written;
- `CHECKED`: long measurements and the suite itself (their options are checked against the script's
  own `--help`, their test selections collected), `make` targets (`make -n`; what `make demo` and
  `make dev` run is tests/ui/test_dev_after_demo.py), a server that runs until stopped;
- `PRODUCTION`: what only a production host has (sudo, systemd, /opt, Postgres, the `.env` file).
Each test has its own scratch checkout, so pytest-xdist can spread them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import outside_libfaketime
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
FIRST, DAYS = date(2026, 11, 23), 4
NOW = "2026-11-27T06:15:00+00:00"
COMMAND_TIMEOUT_S = 600

FENCE = re.compile(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)

# Ranges narrowed to the simulated days: (text in the doc, what runs instead).
CHANGED = {
    "--start 2025-01-01 --end 2025-12-31": "--start 2026-11-23 --end 2026-11-26",
    "month=2025-01-01 until=2026-11-01": "month=2026-10-01 until=2026-11-01",  # one month, not 22
}
# Blocks and inline commands checked, not run as written: (start of the block, reason).
CHECKED = {
    "make demo   # creates .venv": "make: `make -n` shows the targets run comet-ledger demo and pytest",
    "time make demo": "make: `make -n` shows the target runs comet-ledger demo",
    ".venv/bin/python bench/": "a measurement of minutes to hours: each option it passes is in the script's --help",
    ".venv/bin/pytest ": "the suite itself: each selection is collected (--collect-only) and is not empty",
    "# the forms `make test` runs": "the suite itself: each selection is collected (--collect-only) and is not empty",
    ".venv/bin/comet-ledger dev": "a server that runs until stopped: tests/ui/test_dev_after_demo.py starts it",
    ".venv/bin/pip install": "installs into the virtualenv the checkout shares: each extra it names is in pyproject.toml",
}
PRODUCTION = {
    "sudo ": "needs root and a production host (systemd, /opt, a system user)",
    "COMETAPI_KEY=sk-...": "the production .env file's content, not commands",
    "PGPASSWORD=": "a backup or restore of the production PostgreSQL database (tests/deploy/ runs one)",
}


@dataclass(frozen=True)
class Command:
    doc: str
    text: str  # a whole ```sh block, or one inline command
    inline: bool

    @property
    def first_line(self) -> str:
        return self.text.strip().splitlines()[0]


def doc_commands(doc: str) -> list[Command]:
    """The ```sh blocks and inline `.venv/bin/...` commands of `doc`, in order, each once (an inline
    command that is a line of a block runs with its block)."""
    text = (REPO / doc).read_text(encoding="utf-8")
    found = [Command(doc, textwrap.dedent(m.group(3)), False) for m in FENCE.finditer(text) if m.group(2) == "sh"]
    block_lines = {line.split("#")[0].strip() for c in found for line in c.text.splitlines()}
    prose = FENCE.sub("", text)
    found += [Command(doc, " ".join(span.split()), True)
              for span in re.findall(r"`(\.venv/bin/[^`]+)`", prose) if " ".join(span.split()) not in block_lines]
    unique: dict[str, Command] = {}
    for command in found:
        unique.setdefault(command.text.strip(), command)
    return list(unique.values())


def kind(command: Command) -> tuple[str, str]:
    """('run' | 'checked' | 'production', reason)."""
    for table, name in ((PRODUCTION, "production"), (CHECKED, "checked")):
        for start, reason in table.items():
            if command.first_line.startswith(start):
                return name, reason
    return "run", ""


# --- the scratch checkout ---------------------------------------------------------------------------


@dataclass
class Checkout:
    root: Path
    env: dict[str, str]
    sim: SimulatorServer
    alerts: object  # receivers.WebhookReceiver

    @property
    def home(self) -> Path:
        return self.root / "data"

    def bash(self, script: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        for text, instead in CHANGED.items():
            script = script.replace(text, instead)
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def checkout(tmp_path):
    """A scratch checkout whose data home has the simulated days backfilled and smoke-tested."""
    root = tmp_path / "checkout"
    root.mkdir()
    (root / ".venv").symlink_to(VENV)
    for name in ("config", "workspace.yaml", "pyproject.toml", "pipelines", "bench", "deploy", "tests"):
        (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "docs", root / "docs")
    home = root / "data"
    (home / "demo").mkdir(parents=True)
    (home / "demo" / "prices.csv").write_text(prices_csv(FIRST, DAYS))
    traffic = generate_traffic(seed=7, start=FIRST, days=DAYS, requests_per_day=6)
    write_inbox(traffic, home / "inbox")
    from receivers import WebhookReceiver

    with SimulatorServer(traffic) as sim, WebhookReceiver() as alerts:
        # The commands run on the machine's clock with the product's pinned (under `make test-clocks`,
        # Dagster's code server would hang in libfaketime: conftest.outside_libfaketime).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("COMET_LEDGER_", "COMETAPI_", "DAGSTER_"))}
        env = {**outside_libfaketime(inherited, datetime.fromisoformat(NOW)), "DAGSTER_HOME": str(home / "dagster"),
               # as the operator set it: reviews of October (before the simulated days) are allowed
               "COMET_LEDGER_START_DATE": "2026-10-01",
               # the one alert channel, a loopback receiver (`comet-ledger alerts test` reaches it)
               "COMET_LEDGER_ALERT_WEBHOOK_URL": alerts.url("/comet-ledger"),
               "COMETAPI_QUERY_URL": sim.url, "COMETAPI_API_URL": sim.url, "COMETAPI_KEY": sim.api_key,
               "COMETAPI_ACCESS_TOKEN": sim.access_token,
               # one run per month of days (the default 31-day chunks make a month two runs)
               "COMET_LEDGER_CHUNK_DAYS": "32"}
        box = Checkout(root, env, sim, alerts)
        ready = box.bash(".venv/bin/comet-ledger backfill --start 2026-11-23 --end 2026-11-26 >/dev/null && "
                         ".venv/bin/comet-ledger smoke-test >/dev/null")
        assert ready.returncode == 0, ready.stderr[-3000:]
        yield box


def run_all(checkout: Checkout, doc: str) -> dict[str, subprocess.CompletedProcess]:
    """Run every command of `doc` that is run as written; each must exit 0. Returns their results."""
    results, failures = {}, []
    for command in doc_commands(doc):
        if kind(command)[0] != "run":
            continue
        done = checkout.bash(command.text)
        results[command.text.strip()] = done
        if done.returncode != 0:
            failures.append(f"{doc}: `{command.first_line}` exited {done.returncode}: "
                            f"{(done.stderr or done.stdout).strip()[-1500:]}")
    assert not failures, "\n".join(failures)
    return results


def output(results: dict[str, subprocess.CompletedProcess], start: str) -> str:
    """The stdout of the one command (or block) that starts with `start`."""
    [done] = [r for text, r in results.items() if text.startswith(start)]
    return done.stdout


# --- the docs -----------------------------------------------------------------------------------------


def test_the_readme_and_data_dictionary_commands_run(checkout):
    results = run_all(checkout, "README.md")
    assert "team-a" in output(results, ".venv/bin/python -c \"import duckdb, sys")  # spend by team
    assert "matched" in output(results, ".venv/bin/python -c \"import duckdb; print(")  # statuses
    assert "warehouse/recon_key_daily" in output(results, ".venv/bin/dg list defs")
    assert re.fullmatch(r'"\d+\.\d{6}"\n', output(results, ".venv/bin/comet-ledger run --json | jq"))
    assert "review pack for 2026-11 (partial month)" in output(results, ".venv/bin/comet-ledger review --month 2026-11")
    # The Dagster CLI's range is one run, recorded where the UI looks, its pack and smoke test too.
    import dagster as dg

    instance = dg.DagsterInstance.from_config(checkout.env["DAGSTER_HOME"])
    try:
        ranges = [(r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end"))
                  for r in instance.get_runs() if r.is_success]
        assert ("2026-11-24", "2026-11-26") in ranges
        packs = instance.fetch_materializations(dg.AssetKey(["reports", "review_pack"]), limit=10).records
        assert {r.partition_key for r in packs} == {"2026-11-01"}
    finally:
        instance.dispose()
    # docs/data-dictionary.md's command rewrote the scratch copy of docs/ from this warehouse: no change
    # (once an alert evaluation has found something, as the committed dictionary's warehouse has)
    from pipelines.lib.alerts.ledger import MODEL as ALERTS_MODEL
    from pipelines.lib.warehouse import publish, run_model

    with publish(checkout.home / "warehouse.duckdb") as con:
        run_model(con, ALERTS_MODEL, {})
    run_all(checkout, "docs/data-dictionary.md")
    assert (checkout.root / "docs" / "data-dictionary.md").read_text() == (REPO / "docs" / "data-dictionary.md").read_text()


def test_the_operations_guide_commands_run(checkout):
    results = run_all(checkout, "docs/operations.md")
    assert output(results, ".venv/bin/python -c \"from pipelines.defs.schedules").strip() == "22"
    listed = output(results, ".venv/bin/dagster schedule list")
    assert listed.count("RUNNING") >= 2 and "daily_ledger_schedule" in listed
    assert output(results, ".venv/bin/comet-ledger reprice --dry-run").startswith("re-pricing ")
    assert "duckdb_writer" in output(results, ".venv/bin/dagster instance migrate")
    assert [p.body["event"] for p in checkout.alerts.posts][:1] == ["test"]  # `alerts test` reached it
    month_loop = [r for line, r in results.items() if line.startswith("month=")]
    assert month_loop and (checkout.home / "reports" / "review-2026-10" / "manifest.json").is_file()


def test_the_commands_not_run_as_written_are_checked():
    """Measurements: every option they pass is in the script's --help. The suite: every selection
    collects tests. make: the targets exist and run what the README says."""
    from concurrent.futures import ThreadPoolExecutor

    checks = [(line, reason) for command in (c for doc in DOCS for c in doc_commands(doc)) if kind(command)[0] == "checked"
              for reason in [kind(command)[1]]
              for line in command.text.replace("\\\n", " ").splitlines()
              if line.strip() and not line.strip().startswith("#")]
    assert len(checks) >= 12
    with ThreadPoolExecutor(max_workers=4) as pool:  # independent, and mostly waiting on imports
        list(pool.map(lambda check: check_one(*check), checks))


def check_one(line: str, reason: str) -> None:
    """One command checked, not run as written (see CHECKED)."""
    argv = shlex.split(line, comments=True)
    if argv[0] == "time":
        argv = argv[1:]
    if argv[0] == "make":
        dry = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        expected = {"demo": "comet-ledger demo", "test": "pytest", "dev": "comet-ledger dev"}
        assert all(expected[t] in dry.stdout for t in argv[1:]), (line, dry.stdout)
    elif argv[0].endswith("bin/python") and argv[1].startswith("bench/"):
        usage = subprocess.run([sys.executable, argv[1], "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=120)
        assert usage.returncode == 0, usage.stderr
        for option in (a for a in argv[2:] if a.startswith("--")):
            assert re.search(rf"(^|[\s\[,]){re.escape(option)}[\s\],=]", usage.stdout), (line, option)
    elif argv[0].endswith("bin/pytest"):
        collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                    *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert collected.returncode == 0, (line, collected.stdout[-2000:])
        assert re.search(r"^\d+ tests? collected", collected.stdout, flags=re.M) or re.search(
            r"\b[1-9]\d*/\d+ tests collected", collected.stdout), (line, collected.stdout[-500:])
    elif argv[0].endswith("bin/pip"):
        import tomllib

        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        [target] = [a for a in argv if a.startswith(".[")]
        named = target[2:-1].split(",")
        assert argv[1:3] == ["install", "-e"] and named and set(named) <= set(extras), (line, sorted(extras))
    elif argv[:2] == [".venv/bin/comet-ledger", "dev"]:
        assert (REPO / "tests" / "ui" / "test_dev_after_demo.py").is_file()
    else:
        pytest.fail(f"no check for {line!r} ({reason})")



DOCS = ("README.md", "docs/operations.md", "docs/data-dictionary.md", "docs/benchmarks.md", "docs/reliability.md",
        "config/README.md")


def test_every_command_is_run_checked_or_production_only():
    """The exception lists are exact: each entry matches a command of the docs, and every command of
    the docs is run by a test above, or checked, or needs a production host."""
    commands = [c for doc in DOCS for c in doc_commands(doc)]
    assert len(commands) > 30
    used = {start for c in commands for table in (CHECKED, PRODUCTION) for start in table
            if c.first_line.startswith(start)}
    assert used == set(CHECKED) | set(PRODUCTION)
    assert all(any(text in c.text for c in commands) for text in CHANGED)
    ran = {doc for doc in ("README.md", "docs/operations.md", "docs/data-dictionary.md")}
    assert {c.doc for c in commands if kind(c)[0] == "run"} == ran  # benchmarks and reliability: checked only
    production = [c.first_line for c in commands if kind(c)[0] == "production"]
    assert all(line.startswith(("sudo ", "COMETAPI_KEY=", "PGPASSWORD=")) for line in production)
    assert len(production) == 9
