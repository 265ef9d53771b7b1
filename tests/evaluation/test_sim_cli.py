"""`tatbot-pipeline sim-eval` as a user runs it: real simulated controllers, a verdict per stroke, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inference.conftest import act_checkpoint, checkpoint_home  # noqa: F401  (shared session fixtures)

REPO = Path(__file__).resolve().parents[2]


def sim_eval(checkpoint: Path, val: Path, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TATBOT_PIPELINE_HOME": str(home), **env}
    return subprocess.run([sys.executable, "-m", "tatbot_pipeline.cli", "sim-eval", str(checkpoint), "--val", str(val),
                           "--episodes", "1", *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=600)


def test_sim_eval_prints_json_and_exits_1_when_the_gate_fails(act_checkpoint, pristine_recording, tmp_path):
    out = sim_eval(act_checkpoint, pristine_recording, tmp_path / "home", "--json")
    assert out.returncode == 1, out.stderr[-2000:]  # an untrained policy is far more than 3 mm off the expert's path
    [line] = out.stdout.strip().splitlines()  # one JSON object, nothing else on stdout
    result = json.loads(line)
    assert result["passed"] is False and result["strokes"] == 1 and result["tip_error_mm_p95"] > 3
    assert result["reasons"] and all(isinstance(r, str) for r in result["reasons"])
    assert "Svt[" not in out.stdout + out.stderr and "Map:" not in out.stdout + out.stderr  # library noise in the log


def test_sim_eval_passes_under_the_labs_limits_with_one_line_per_stroke(act_checkpoint, pristine_recording, tmp_path):
    relaxed = {"TATBOT_SIM_GATE_TIP_DEVIATION_MM": "1000", "TATBOT_SIM_GATE_MAX_TIP_ERROR_P95_MM": "1000",
               "TATBOT_SIM_GATE_MAX_CONTACT_FORCE_N": "1000"}
    out = sim_eval(act_checkpoint, pristine_recording, tmp_path / "home", **relaxed)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [line for line in lines if line.strip().startswith("stroke 0: ok — tip deviation from the expert's replay p95 ")]
    assert any(line.startswith("SIM GATE PASSED: ") and "≤ 1000 mm" in line for line in lines)
    assert (tmp_path / "home" / "outputs" / "sim").is_dir()


def test_sim_eval_without_a_val_split_says_what_to_pass(act_checkpoint, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tatbot_pipeline.cli", "sim-eval", str(act_checkpoint)], cwd=REPO,
                         env={**os.environ, "TATBOT_PIPELINE_HOME": str(tmp_path)}, capture_output=True, text=True)
    assert out.returncode == 2 and "pass --val" in out.stderr
