"""The demo as a user runs it, then the Dagster UI on its instance, driven by headless Chromium.

One module, one demo run (the whole loop, ~1.5 min on 2 cores): the terminal output, the instance it leaves, and the
pages a person opens after `make demo`. Screenshots land in test-artifacts/ui/ (git-ignored) so a person can look at
what the test saw.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster_dev import REPO, dagster_dev, fresh_instance

ARTIFACTS = REPO / "test-artifacts" / "ui"
LINEAGE = ["stroke_recording", "recording_validation", "training_splits", "trained_policy", "policy_evaluation",
           "sim_evaluation", "eval_dataset"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """`tatbot-pipeline demo --no-ui` on a fresh instance and pipeline home, as `make demo` runs it."""
    root = tmp_path_factory.mktemp("demo")
    dagster_home, home = fresh_instance(root / "dagster_home"), root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TATBOT_")}
    env.update(DAGSTER_HOME=str(dagster_home), TATBOT_PIPELINE_HOME=str(home),
               TATBOT_ROBOT_STATE_DIR=str(root / "robot-state"))
    out = subprocess.run([str(Path(sys.executable).parent / "tatbot-pipeline"), "demo", "--no-ui"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"dagster_home": dagster_home, "home": home, "stdout": out.stdout, "stderr": out.stderr}


def test_the_terminal_shows_the_steps_and_the_logs_hold_the_rest(demo):
    lines = (demo["stdout"] + demo["stderr"]).splitlines()
    assert len(lines) <= 150, len(lines)
    text = demo["stdout"] + demo["stderr"]
    steps = [line for line in demo["stdout"].splitlines() if line.startswith("==> ")]
    assert [s[:8] for s in steps] == [f"==> {i}/7 " for i in range(1, 8)]
    for noise in ("Svt[", "SVT [", "[mp4 @", "'batch_size'", "Warning:", "UserWarning", "DeprecationWarning"):
        assert noise not in text, noise
    assert "OPEN-LOOP GATE PASSED: health 3/3, MAE" in text and "OK — 40/40 steps" in text
    assert "SIM GATE PASSED: " in text and "; PROMOTED" in text
    [log] = re.findall(r"full logs:\s+(\S+\.log)", demo["stdout"])
    assert "Svt" not in Path(log).read_text() and "lerobot" in Path(log).read_text()  # the detail, minus encoder banners
    assert "Watch the loop:" in demo["stdout"].splitlines()[-1]


def test_the_instance_after_the_demo_tells_the_story(demo):
    with dg.DagsterInstance.from_config(str(demo["dagster_home"])) as instance:
        assert not [r.job_name for r in instance.get_runs() if r.job_name == "__ephemeral_asset_job__"]
        usable = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("recording_validation"), "recording_usable"), limit=50)
        [failed] = [r for r in usable if r.status.value == "FAILED"]
        assert failed.partition.startswith("stroke-crashed-") and failed.evaluation.description.startswith(
            f"{failed.partition}: fail — ")
        latest = {key: instance.fetch_materializations(dg.AssetKey(key), limit=1).records[0].asset_materialization
                  for key in ("trained_policy", "policy_evaluation", "eval_dataset")}
        for key, mat in latest.items():
            assert list(mat.metadata)[0] == "summary", key
            for name, value in mat.metadata.items():
                if isinstance(value.value, float):
                    assert float(f"{value.value:.4g}") == value.value, (key, name, value.value)
        evaluation = latest["policy_evaluation"].metadata
        assert evaluation["gate_mae_limit_rad"].value == 0.5 and evaluation["gate_mae_passed"].value is True
        assert isinstance(latest["eval_dataset"].metadata["actions_clamped"].value, int)
        assert latest["eval_dataset"].tags["tatbot/robot"] == "hog"


def browse(url: str, screenshot: str, window: str = "2400,1400") -> str:
    """The page's text after its scripts ran (virtual time lets the UI's GraphQL queries settle), and a screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Debian's chromium is missing: run ./scripts/setup.sh --with-test-deps (what `make test` does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _chromium([chromium, f"--window-size={window}", f"--screenshot={ARTIFACTS / screenshot}", url])
    dom = _chromium([chromium, f"--window-size={window}", "--dump-dom", url])
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def _chromium(argv: list[str], timeout_s: float = 180) -> str:
    """Headless Chromium with a fresh profile each time (a profile left locked by an earlier run must not stall this
    one) and no background traffic; on a timeout its whole process group goes, so no renderer outlives the test."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
             "--no-first-run", "--disable-component-update", "--disable-sync", "--virtual-time-budget=30000"]
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.Popen([argv[0], *flags, f"--user-data-dir={profile}", *argv[1:]], cwd=ARTIFACTS,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"chromium did not finish {argv[1:]} within {timeout_s:g} s")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers (zygote, renderers) that outlived the browser
    return out


def test_the_ui_shows_failures_thresholds_and_rollout_quality(demo, tmp_path):
    env = {"TATBOT_PIPELINE_HOME": str(demo["home"]), "TATBOT_RECORDINGS_DIR": str(demo["home"] / "demo" / "recordings"),
           "TATBOT_SETTLE_SECONDS": "1e9"}  # no background ingestion meanwhile
    rollout = next((demo["home"] / "eval_datasets").iterdir()).name
    with dagster_dev(demo["dagster_home"], env, tmp_path / "dagster_dev.log") as url:
        lineage = browse(f"{url}/assets/eval_dataset?view=lineage&lineageScope=upstream&lineageDepth=7",
                         "eval_dataset_lineage.png")
        assert not [name for name in LINEAGE if name not in lineage]

        partitions = browse(f"{url}/assets/recording_validation?view=partitions", "recording_partitions.png")
        assert "Failed (1)" in partitions and "stroke-crashed-" in partitions

        evaluation = browse(f"{url}/assets/policy_evaluation", "policy_evaluation.png")
        assert "OPEN-LOOP GATE PASSED: health 3/3, MAE" in evaluation and "≤ 0.5 rad" in evaluation
        assert "gate_mae_limit_rad" in evaluation and "gate_chunk_latency_p95_limit_ms" in evaluation

        simulation = browse(f"{url}/assets/sim_evaluation", "sim_evaluation.png")
        assert "SIM GATE PASSED" in simulation and "drawn_vs_planned" in simulation and "tip_error_p95_mm" in simulation

        rollout_page = browse(f"{url}/assets/eval_dataset?view=partitions&partition={rollout}", "eval_dataset.png")
        assert "actions_clamped" in rollout_page and "max_tracking_error_rad" in rollout_page
        assert "OK — 40/40 steps" in rollout_page
