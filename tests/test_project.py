"""The Dagster project loads the way users start it: `dagster definitions validate` from the repo root."""

from __future__ import annotations

import os
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
