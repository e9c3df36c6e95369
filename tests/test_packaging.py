"""sql/ is found from a checkout and from an installed wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

from pipelines.lib.warehouse import model_path, sql_dir

REPO = Path(__file__).resolve().parents[1]


def test_checkout_finds_the_sql_models():
    assert sql_dir() == REPO / "sql"
    assert model_path("quota_daily") == REPO / "sql" / "core" / "quota_daily.sql"


def test_an_installed_wheel_carries_and_finds_the_sql_models_and_the_compiled_scanner(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("comet_ledger-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("pipelines/_sql/")}
    expected = {f"pipelines/_sql/{p.relative_to(REPO / 'sql')}" for p in (REPO / "sql").rglob("*.sql")}
    assert expected and shipped == expected

    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)  # a wheel is a zip laid out as site-packages
    probe = subprocess.run(
        [sys.executable, "-c", "from pipelines.lib.warehouse import sql_dir, model_path; "
         "print(sql_dir()); print(model_path('quota_daily').read_text()[:20]); "
         "from pipelines.lib.request_logs import fast; print(fast._scan.__file__)"],
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.splitlines()[0] == str(target / "pipelines" / "_sql")
    assert probe.stdout.splitlines()[-1].startswith(str(target / "pipelines" / "lib" / "request_logs" / "_scan."))
