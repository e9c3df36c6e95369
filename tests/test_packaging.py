"""sql/ and the instance's dagster.yaml are found from a checkout and from an installed wheel; the documents
cited are in the repository."""

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
    expected = {f"pipelines/_sql/{p.relative_to(REPO / 'sql')}" for p in (REPO / "sql").rglob("*") if p.is_file()}
    assert expected and shipped == expected and "pipelines/_sql/warehouse_schema.json" in shipped
    assert "pipelines/dagster.yaml" in names  # what runs.py writes into an empty DAGSTER_HOME

    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)  # a wheel is a zip laid out as site-packages
    probe = subprocess.run(
        [sys.executable, "-c", "from pipelines.lib.warehouse import sql_dir, model_path; "
         "print(sql_dir()); print(model_path('quota_daily').read_text()[:20]); "
         "from pipelines.runs import instance_config; print(instance_config().splitlines()[-1]); "
         "from pipelines.lib.data_dictionary import committed_schemas; print(committed_schemas()['recon_key_daily']['columns'][0]['name']); "
         "from pipelines.lib.request_logs import batch; print(batch._scan.__file__)"],
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.splitlines()[0] == str(target / "pipelines" / "_sql")
    assert probe.stdout.splitlines()[-3] == "    default_limit: 1  # duckdb_writer, the only pool"
    assert probe.stdout.splitlines()[-2] == "usage_date"  # the column schemas the asset definitions show
    assert probe.stdout.splitlines()[-1].startswith(str(target / "pipelines" / "lib" / "request_logs" / "_scan."))


def test_every_document_the_code_and_docs_cite_is_in_the_repository():
    """A docstring or doc that points at a Markdown file points at one a reader of this repository has."""
    import re
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    present = {Path(p).name for p in tracked if p.endswith(".md")}
    cited = {}
    for path in tracked:
        if path.startswith("tests/fixtures/") or not path.endswith((".py", ".md", ".sql", ".toml", ".yaml", ".c")):
            continue
        for name in re.findall(r"(?<![\w.])([\w-]+\.md)\b", (repo / path).read_text(encoding="utf-8")):
            cited.setdefault(name, path)
    written = {"reconciliation.md"}  # a file the review pack writes, not a document of the repository
    missing = {name: where for name, where in cited.items() if name not in present | written}
    assert not missing, f"cited but not in the repository: {missing}"
    assert {"README.md", "operations.md", "data-dictionary.md"} <= set(cited)


def test_dg_loads_the_project_from_the_repository_root(tmp_path):
    """`make` installs Dagster's `dg` at the installed Dagster's release, and `[tool.dg]` points it at
    the definitions: from the repository root, with the environment `make` gives (a data home and
    DAGSTER_HOME, no API variables), `dg list defs` lists every asset and schedule the definitions
    have and `dg check defs` passes; its code location is the one workspace.yaml names. The README's
    section shows those commands and names no Dagster release but the installed one."""
    import json
    import os
    import re
    import tomllib
    from importlib import metadata

    import yaml

    from pipelines.definitions import build_definitions
    from pipelines.lib.settings import load_settings

    dagster = metadata.version("dagster")
    assert metadata.version("dagster-dg-cli") == metadata.version("dagster-webserver") == dagster
    assert metadata.version("dagster-postgres").split(".")[2] == dagster.split(".")[2]  # 0.29.N with 1.13.N

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("COMET_LEDGER_", "COMETAPI_", "DAGSTER_"))},
           "COMET_LEDGER_NOW": os.environ["COMET_LEDGER_NOW"], "COMET_LEDGER_HOME": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path / "data" / "dagster")}
    dg_bin = str(Path(sys.executable).with_name("dg"))
    listed = subprocess.run([dg_bin, "list", "defs", "--json"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)
    defs = build_definitions(load_settings(env, dotenv_path=tmp_path / "no.env"))
    expected = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {a["asset_key"] for a in found["assets"]} == expected
    assert "warehouse/recon_key_daily" in expected and "reports/review_pack" in expected
    assert {s["name"] for s in found["schedules"]} == {s.name for s in defs.schedules}
    assert "daily_ledger_schedule" in {s["name"] for s in found["schedules"]}
    # `dg dev` serves the code location `make dev` does (workspace.yaml's), so the UI's runs are the same
    [location] = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert project["code_location_name"] == location["python_module"]["module_name"] == "pipelines.definitions"
    checked = subprocess.run([dg_bin, "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    assert "virtual environment" not in checked.stdout + checked.stderr  # no warning on .venv/bin/dg unactivated

    readme = " ".join((REPO / "README.md").read_text().split())
    section = readme[readme.index("### Dagster's `dg`"):readme.index("## Configuration")]
    assert ".venv/bin/dg list defs" in section and ".venv/bin/dg check defs" in section and "dg dev" in section
    assert set(re.findall(r"\b1\.\d+\.\d+\b", section)) <= {dagster}
    assert "pipelines.definitions" in section
