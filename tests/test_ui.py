"""The Dagster UI as a user sees it: `dagster dev` on a free loopback port, driven by headless Chromium.

Screenshots land in test-artifacts/ui/ (git-ignored) so a person can look at what the test saw.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from tatbot_pipeline.defs.ingestion import recording_validation, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.inference.local_node import free_port

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "ui"
ASSETS = ["stroke_recording", "recording_validation", "training_splits", "trained_policy", "eval_dataset"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: run ./scripts/setup.sh --with-test-deps (what `make test` does)")
    return path


def browse(url: str, screenshot: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets the UI's GraphQL queries settle), plus a screenshot."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=2400,1000",
            "--virtual-time-budget=30000"]
    subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, cwd=screenshot.parent)
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return dom.stdout


@pytest.fixture
def dagster_dev(tmp_path: Path, recording_copy, recordings_root: Path):
    """An instance with two ingested recordings (one failing), served by `dagster dev` from the repo root."""
    dagster_home, home = tmp_path / "dagster_home", tmp_path / "home"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    good = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    bad = recording_copy("stroke-flower-2025y-08m-10d-09h-00m-00s")
    (bad / "strokebatch.safetensors").unlink()
    resource = PipelineResource(recordings_dir=str(recordings_root), home=str(home), settle_seconds=0)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("recordings", [good.name, bad.name])
        for name in (good.name, bad.name):
            dg.materialize([stroke_recording, recording_validation], partition_key=name, instance=instance,
                           resources={"pipeline": resource}, raise_on_error=False)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_MODULE_NAME"}  # see README: it hangs `dagster dev`
    env.update(DAGSTER_HOME=str(dagster_home), TATBOT_RECORDINGS_DIR=str(recordings_root),
               TATBOT_PIPELINE_HOME=str(home), TATBOT_SETTLE_SECONDS="1e9")  # no background ingestion meanwhile
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if urllib.request.urlopen(f"{url}/server_info", timeout=5).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not come up: {(tmp_path / 'dagster_dev.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url, good.name, bad.name
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_asset_graph_and_a_verdict_render(dagster_dev):
    url, good, bad = dagster_dev
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    lineage = browse(f"{url}/assets/eval_dataset?view=lineage&lineageScope=upstream&lineageDepth=5",
                     ARTIFACTS / "eval_dataset_lineage.png")
    missing = [name for name in ASSETS if name not in lineage]
    assert not missing, f"asset graph lacks {missing}"

    page = browse(f"{url}/assets/recording_validation?view=events&partition={bad}", ARTIFACTS / "validation_fail.png")
    assert "recording_validation" in page
    assert "strokebatch.safetensors missing" in page  # the finding, from the findings table
    assert ">fail<" in page.replace(" ", "")  # the status metadata value
    assert (ARTIFACTS / "eval_dataset_lineage.png").stat().st_size > 10_000
    assert (ARTIFACTS / "validation_fail.png").stat().st_size > 10_000
