"""`tatbot-pipeline validate` runs the same core as the asset: JSON lines, exit codes, no tracebacks, no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_validate(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tatbot_pipeline.cli", "validate", "--settle-seconds", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_json_lines_and_exit_codes(recording_copy, tmp_path: Path):
    good = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    broken = recording_copy("stroke-flower-2025y-08m-10d-09h-00m-00s")
    (broken / "meta" / "info.json").write_text("{half a file")
    with open(good / "logs" / "episode_000002.txt", "a") as f:
        f.write("x|lerobot|ERROR| Failed to read camera realsense1\n")

    ok = run_validate("--json", str(good))
    assert ok.returncode == 0, ok.stderr
    [row] = [json.loads(line) for line in ok.stdout.splitlines()]
    assert row["recording"] == good.name and row["status"] == "warn"
    assert row["episodes_total"] == 4 and row["episodes_usable"] == [0, 1, 3]
    assert {"check": "episode_logs", "severity": "exclude", "episode": 2}.items() <= row["findings"][0].items()

    both = run_validate("--json", str(good), str(broken), str(tmp_path / "missing"))
    assert both.returncode == 1
    rows = [json.loads(line) for line in both.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["warn", "fail", "fail"]
    assert "Traceback" not in both.stderr
    for text in (ok.stdout, both.stdout, both.stderr):
        assert "tatbot-cam-pw-1" not in text and "192.168.1.91" not in text


def test_human_output_names_reasons(recording_copy):
    rec = recording_copy()
    (rec / "strokebatch.safetensors").unlink()
    out = run_validate(str(rec))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL") and "strokebatch.safetensors missing" in out.stdout


def test_human_output_shows_joystick_moves(recording_copy):
    out = run_validate(str(recording_copy()))
    assert out.returncode == 0 and out.stdout.startswith("PASS")
    [line] = [x for x in out.stdout.splitlines() if "depth offset moved" in x]
    assert line.strip().startswith("depth offset moved (joystick): episode 2: ") and "->" in line


def test_a_v21_conversion_shows_no_library_progress_bars_and_names_the_home(recording_copy, pristine_v21, tmp_path):
    import os

    rec = recording_copy(source=pristine_v21)
    home = tmp_path / "home"
    env = {**os.environ, "TATBOT_PIPELINE_HOME": str(home)}
    cmd = [sys.executable, "-m", "tatbot_pipeline.cli", "validate", "--settle-seconds", "0", str(rec)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("PASS") and f"{home}/converted/{rec.name}" in out.stdout
    assert out.stderr.splitlines() == [f"pipeline home: {home} (from TATBOT_PIPELINE_HOME)"]  # no bars, no prints


def test_outside_the_activated_shell_the_home_is_the_documented_default_not_the_cwd(tmp_path):
    code = "from tatbot_pipeline.config import PipelineSettings; s = PipelineSettings.from_env(); print(s.home); " \
           "print(s.home_note())"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TATBOT_PIPELINE_HOME"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    home, note = out.stdout.splitlines()
    repo = Path(__file__).resolve().parents[2]
    assert Path(home) == repo / ".tatbot" and not Path(home).is_relative_to(tmp_path)
    assert note == f"pipeline home: {home} (TATBOT_PIPELINE_HOME is not set: the default home (source " \
                   ".venv/bin/activate sets it))"
