"""Build step: compile the inbox scanner (pipelines/lib/request_logs/_scan.c) into an extension module.

Runs for the wheel and for `pip install -e .` (the module is written beside its source, where an
editable install finds it). It needs a C compiler and Python's headers; without them the install
still succeeds with a warning, and the pipeline normalises every line in Python (the same outcomes,
slower). `tests/lib/test_request_logs_native.py` fails when the module is missing, so CI notices.
"""

from __future__ import annotations

import shlex
import subprocess
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("pipelines/lib/request_logs/_scan.c")


class ScanExtensionHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        target = root / SOURCE.with_name("_scan" + sysconfig.get_config_var("EXT_SUFFIX"))
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        command = [*compiler, "-O3", "-shared", "-fPIC", "-Wall", f"-I{sysconfig.get_paths()['include']}",
                   str(root / SOURCE), "-o", str(target)]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(f"could not compile {SOURCE} (inbox staging will be slower): {detail.strip()[:500]}")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"][str(target)] = str(target.relative_to(root))
