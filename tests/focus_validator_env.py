"""The FinOps Foundation's FOCUS validator (focus-validator, from the package index) in a venv of its
own, `.venv-focus/`, which tests/lib/test_focus.py runs against the export.

Its own venv because focus-validator 2.2.1 needs Python >= 3.12 and the product supports 3.11; the
versions are pinned in tests/requirements-focus-validator.txt. `make test` builds it first
(`python tests/focus_validator_env.py`); a test that finds it missing or stale builds it itself,
under a lock, so two test processes never build it at once. A venv that cannot be built is an
error with the reason (`ValidatorUnavailable`), which the test reports as a failure.

How it is run (`run(...)`): `--block-download` (it otherwise fetches the rule set from GitHub), in
the directory that holds its package (it opens `focus_validator/rules/currency_codes.csv` relative
to the working directory), and its summary line read, since it exits 0 whatever it finds.

Standard library only: the Makefile runs this file with whichever Python 3 it has.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "tests" / "requirements-focus-validator.txt"
VENV = Path(os.environ.get("COMET_LEDGER_FOCUS_VENV", ROOT / ".venv-focus"))
STAMP = VENV / ".installed-stamp"
# How to start Python 3.12: COMET_LEDGER_FOCUS_PYTHON if set, else pyenv's 3.12.1 (`pyenv exec`, since
# a Python that pyenv started has its own version's directory first on PATH), else python3.12.
PYENV_VERSION = "3.12.1"
SUMMARY = re.compile(r"^Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)$", re.M)
RESULT = re.compile(r"^\S+ ([A-Za-z]+-[A-Z]-\d{3}-[MCO]): (PASS|FAIL|SKIPPED)\b", re.M)


class ValidatorUnavailable(RuntimeError):
    """The validator's venv cannot be built or used; the message says why."""


@dataclass(frozen=True)
class Validator:
    executable: Path  # .venv-focus/bin/focus-validator
    package_dir: Path  # its focus_validator package; the folder holding it is the working directory it needs


@dataclass(frozen=True)
class Report:
    total: int
    passed: int
    failed: int
    skipped: int
    failed_rules: tuple[str, ...]  # rule ids reported FAIL, sorted
    output: str  # the validator's whole console output


def _python() -> tuple[list[str], dict[str, str]]:
    named = os.environ.get("COMET_LEDGER_FOCUS_PYTHON")
    if named:
        return shlex.split(named), dict(os.environ)
    pyenv = shutil.which("pyenv")
    if pyenv:
        return [pyenv, "exec", "python"], {**os.environ, "PYENV_VERSION": PYENV_VERSION}
    return ["python3.12"], dict(os.environ)


def _wanted() -> str:
    """What the stamp must say for the venv to be current: the pins (not the comments) and the interpreter."""
    pins = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return hashlib.sha256("\n".join([*pins, " ".join(_python()[0])]).encode()).hexdigest()


def _run(cmd: list[str], env: dict[str, str] | None, what: str) -> str:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"{what}: {' '.join(cmd)}: {exc}") from None
    if done.returncode:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise ValidatorUnavailable(f"{what}: `{' '.join(cmd)}` exited {done.returncode}: {' / '.join(tail)}")
    return done.stdout


def _current() -> Validator | None:
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None
    found = Validator(Path(stamp.get("executable", "")), Path(stamp.get("package_dir", "")))
    if stamp.get("wanted") != _wanted() or not found.executable.is_file() or not found.package_dir.is_dir():
        return None
    return found


def ensure() -> Validator:
    """The validator, building `.venv-focus/` first when it is missing or its pins changed."""
    found = _current()
    if found:
        return found
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.with_name(f"{VENV.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _current() or _build()


def _build() -> Validator:
    python, env = _python()
    shutil.rmtree(VENV, ignore_errors=True)
    how = "building the FOCUS validator's venv (it needs Python >= 3.12; set COMET_LEDGER_FOCUS_PYTHON to one)"
    version = _run([*python, "-c", "import sys; print(*sys.version_info[:2])"], env, how).split()
    if tuple(int(part) for part in version) < (3, 12):
        raise ValidatorUnavailable(f"{how}: `{' '.join(python)}` is Python {'.'.join(version)}")
    _run([*python, "-m", "venv", str(VENV)], env, how)
    bin_dir = VENV / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-r", str(REQUIREMENTS)], None, f"installing {REQUIREMENTS.name} into {VENV}")
    package_dir = Path(_run([str(bin_dir / "python"), "-c",
                             "import focus_validator, os; print(os.path.dirname(focus_validator.__file__))"],
                            None, "finding the focus_validator package").strip())
    found = Validator(bin_dir / "focus-validator", package_dir)
    if not found.executable.is_file():
        raise ValidatorUnavailable(f"installing focus-validator into {VENV} gave no {found.executable}")
    STAMP.write_text(json.dumps({"wanted": _wanted(), "executable": str(found.executable),
                                 "package_dir": str(package_dir)}, indent=2) + "\n")
    return found


def run(data_file: Path, *, version: str, applicability: tuple[str, ...]) -> Report:
    """Validate one Parquet or CSV file against FOCUS `version`, offline; the parsed console report."""
    validator = ensure()
    cmd = [str(validator.executable), "--data-file", str(Path(data_file).resolve()), "--validate-version", version,
           "--block-download", "--output-type", "console"]
    if applicability:
        cmd += ["--applicability-criteria", ",".join(applicability)]
    try:
        done = subprocess.run(cmd, cwd=validator.package_dir.parent, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValidatorUnavailable(f"running {validator.executable}: {exc}") from None
    output = done.stdout + done.stderr
    summary = SUMMARY.search(output)
    if done.returncode or not summary:
        tail = " / ".join(output.strip().splitlines()[-3:])
        raise ValidatorUnavailable(f"focus-validator on {data_file} exited {done.returncode} without its summary "
                                   f"line (Total: … | Pass: … | Fail: … | Skipped: …): {tail}")
    total, passed, failed, skipped = (int(n) for n in summary.groups())
    failed_rules = tuple(sorted({rule for rule, status in RESULT.findall(output) if status == "FAIL"}))
    return Report(total, passed, failed, skipped, failed_rules, output)


if __name__ == "__main__":
    try:
        built = ensure()
    except ValidatorUnavailable as exc:
        print(f"FOCUS validator unavailable, so tests/lib/test_focus.py will fail: {exc}", file=sys.stderr)
        sys.exit(0)  # the rest of the suite still runs; the validator's test fails with this reason
    STAMP.touch()  # newer than its inputs, for make, when they changed without changing the pins
    print(f"FOCUS validator ready: {built.executable}")
