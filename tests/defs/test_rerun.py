"""`tatbot-pipeline rerun`: a failed training re-executed from failure through the code location, from the
activated shell, on a run that `dagster job execute` started (no origin: the UI cannot re-execute it).

The training fails in preflight on a split whose data file was cut short: in seconds, naming the file, as a step
failure (which the daemon does not retry). No daemon runs here: the re-execution is checked as queued, with the
failed run as its parent and root (so a training resumes its run dir) and an origin the daemon can launch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster_dev import fresh_instance

pytestmark = [pytest.mark.xdist_group("daemon"), pytest.mark.yields_cpu]
NICE = 15  # nothing here is timed: yield the CPU to the other worker's real-time simulators


def shell(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`command` in the activated shell (scripts/setup.sh's environment), as a user types it."""
    return subprocess.run(["nice", "-n", str(NICE), "bash", "-c",
                           f"source {Path(sys.executable).parent / 'activate'} && {command}"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_failed_training_is_rerun_from_failure_through_the_code_location(pristine_recording: Path, tmp_path: Path):
    home, dagster_home = tmp_path / "home", fresh_instance(tmp_path / "dagster_home")
    split = home / "splits" / "v1" / "train"
    shutil.copytree(pristine_recording, split)
    (home / "splits" / "latest").symlink_to("v1", target_is_directory=True)
    (split.parent / "split.json").write_text(json.dumps({"version": "v1", "stroke_length": 8, "recordings": []}))
    data = sorted(split.glob("data/*/*.parquet"))[0]
    data.write_bytes(data.read_bytes()[:100])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TATBOT_")},
           "TATBOT_PIPELINE_HOME": str(home), "TATBOT_RECORDINGS_DIR": str(tmp_path / "recordings")}
    exports = f"export DAGSTER_HOME={dagster_home}"

    executed = shell(f"{exports} && dagster job execute -j train_policy_job", env, tmp_path)
    assert executed.returncode != 0
    assert f"preflight: {data}: not a readable parquet file" in executed.stdout + executed.stderr
    assert not (home / "outputs" / "train" / "logs").exists(), "no trainer started"

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [failed] = [r.dagster_run for r in instance.get_run_records()]
        assert failed.status == dg.DagsterRunStatus.FAILURE and failed.remote_job_origin is None

        rerun = shell(f"{exports} && tatbot-pipeline rerun {failed.run_id}", env, tmp_path)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"re-executed from failure of {failed.run_id}" in rerun.stdout
        [queued] = [r.dagster_run for r in instance.get_run_records() if r.dagster_run.run_id != failed.run_id]
        assert queued.status == dg.DagsterRunStatus.QUEUED
        assert queued.parent_run_id == queued.root_run_id == failed.run_id
        assert queued.remote_job_origin is not None  # the daemon can launch it, and the UI re-execute it
        assert queued.remote_job_origin.repository_origin.code_location_origin.location_name == "tatbot_pipeline"
        assert queued.tags["dagster/max_retries"] == "2"  # the training's own tags

        again = shell(f"{exports} && tatbot-pipeline rerun {queued.run_id}", env, tmp_path)
        assert again.returncode == 2 and "only a failed or cancelled run" in again.stderr
