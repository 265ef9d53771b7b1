"""The Dagster project loads the way users start it: `dagster definitions validate` from the repo root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path: Path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "TATBOT_RECORDINGS_DIR": str(tmp_path / "rec")}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(dagster), "definitions", "validate"], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_importing_the_project_reads_and_changes_no_environment():
    """Every module imports with an empty environment and leaves it as it was: settings are read at call time."""
    code = """
import os, pkgutil, importlib, importlib.util
before = dict(os.environ)
package = importlib.util.find_spec("tatbot_pipeline").submodule_search_locations
names = ["tatbot_pipeline", *(m.name for m in pkgutil.walk_packages(package, "tatbot_pipeline."))]
for name in names:
    importlib.import_module(name)
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
print(len(names))
"""
    # Values that would raise if anything parsed them at import.
    env = {"PATH": os.environ["PATH"], "TATBOT_TRAIN_GPUS": "not-a-number", "TATBOT_SETTLE_SECONDS": "soon"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout) > 60  # every module, not a few


def test_settings_are_read_by_config_alone_and_never_written():
    """No `TATBOT_*` variable is looked up outside config.py, and nothing writes one into this process's environment:
    the demo hands its settings to runs and child processes explicitly."""
    read = re.compile(r"""(environ\.get\(|environ\[|getenv\()\s*["']TATBOT_""")
    written = re.compile(r"""environ\[["']TATBOT_\w+["']\]\s*=[^=]|environ\.(setdefault|update)\(\s*["']?TATBOT_|putenv\(\s*["']TATBOT_""")
    lines = [(path, n, line) for path in (REPO / "tatbot_pipeline").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1)]
    readers = [f"{path.relative_to(REPO)}:{n}" for path, n, line in lines
               if path.name != "config.py" and read.search(line) and not written.search(line)]
    writers = [f"{path.relative_to(REPO)}:{n}" for path, n, line in lines if written.search(line)]
    assert not readers, readers
    assert not writers, writers
    assert written.search('os.environ["TATBOT_RECORDINGS_DIR"] = str(root)')  # the pattern catches what demo.py did


def test_imports_follow_the_layer_order():
    """`lint-imports` (import-linter, contracts in pyproject.toml): no import against the layer order, no cycle
    between modules or folders, no dagster below defs/, synth only for the entry points."""
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert re.search(r"Contracts: (\d+) kept, 0 broken", out.stdout).group(1) == "5"


def test_the_import_contracts_catch_an_upward_import_and_a_cycle(tmp_path: Path):
    """The same contracts on a copy of the package with one upward import added (config -> evaluation.gate, the
    cycle this project once had) must break: the layers contract and the acyclic-siblings contract both fail."""
    import shutil

    copy = tmp_path / "tatbot_pipeline"
    shutil.copytree(REPO / "tatbot_pipeline", copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = copy / "config.py"
    config.write_text(config.read_text() + "\nfrom tatbot_pipeline.evaluation.gate import Thresholds  # noqa\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "Layers point one way" in out.stdout and "tatbot_pipeline.config -> tatbot_pipeline.evaluation.gate" in out.stdout
    assert re.search(r"No cycle between the modules.*BROKEN", out.stdout), out.stdout[-3000:]
