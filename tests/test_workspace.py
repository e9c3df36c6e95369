"""What operators run: `dagster definitions validate -w workspace.yaml` (what `dagster dev` loads)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_workspace_code_location_validates(tmp_path):
    env = {"COMET_LEDGER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_a_bad_setting_fails_the_code_location_with_the_variable_named(tmp_path):
    env = {"COMET_LEDGER_HOME": str(tmp_path), "COMET_LEDGER_TIMEZONE": "Nowhere/Land", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "COMET_LEDGER_TIMEZONE='Nowhere/Land' is not an IANA time zone" in result.stderr + result.stdout
