"""The packages' layers, read from the source: no import runs back up.

- `pipelines/lib/` is the product's logic: it knows neither Dagster nor the command line nor the
  simulator, so every rule in it can be checked on its own;
- `pipelines/simulator/` (the CometAPI stand-in for the demo, `dev` and the tests) uses only `lib/`'s
  clock, never the product's assets or commands;
- `pipelines/defs/` (the Dagster assets) never imports the command line, and of the command line
  (`pipelines/cli/`) only `simulated.py` imports the simulator;
- inside `lib/`, the CometAPI clients (`lib/cometapi/`) speak HTTP only: they never import the
  gateway ledger's package (`lib/gateway/`), which reads and checks what they fetch.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
FORBIDDEN = {
    "lib": ("dagster", "pipelines.defs", "pipelines.cli", "pipelines.definitions", "pipelines.runs",
            "pipelines.simulator"),
    "simulator": ("dagster", "pipelines.defs", "pipelines.cli", "pipelines.definitions", "pipelines.runs"),
    "defs": ("pipelines.cli",),
    "lib/cometapi": ("pipelines.lib.gateway",),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def breaches(package: str) -> list[str]:
    banned = FORBIDDEN[package]
    return [f"pipelines/{path.relative_to(PIPELINES).as_posix()}:{line} imports {module}"
            for path in sorted((PIPELINES / package).rglob("*.py"))
            for line, module in imports(path)
            if any(module == b or module.startswith(b + ".") for b in banned)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up(package):
    assert (PIPELINES / package).is_dir()
    assert breaches(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    bad = tmp_path / "lib" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from pipelines.defs.resources import LedgerHome\n    import dagster as dg\n")
    monkeypatch.setattr(sys.modules[__name__], "PIPELINES", tmp_path)
    assert breaches("lib") == ["pipelines/lib/bad.py:2 imports pipelines.defs.resources",
                               "pipelines/lib/bad.py:2 imports pipelines.defs.resources.LedgerHome",
                               "pipelines/lib/bad.py:3 imports dagster"]


def test_only_the_simulated_commands_import_the_simulator():
    """The command line's modules reach the simulator through `pipelines/cli/simulated.py` alone."""
    importers = sorted({path.name for path in (PIPELINES / "cli").glob("*.py") for _, module in imports(path)
                        if module == "pipelines.simulator" or module.startswith("pipelines.simulator.")})
    assert importers == ["simulated.py"]
