"""A training whose run worker is killed, under the real daemon: `dagster dev` on a fresh instance with the repo's
dagster.yaml, the training launched with the README's command (`dagster job launch`), the worker SIGKILLed once a
checkpoint is on disk (what the out-of-memory killer or a lost node does to it).

Expected, each read from the instance or the disk: the run is marked failed, the daemon re-executes it from failure,
the re-execution resumes the same run dir from its last checkpoint, `trained_policy` materializes with health
checks judged on both attempts, nothing of the killed attempt keeps training, and nothing blocks the next training.
A step failure that is not retried, and `tatbot-pipeline rerun`: test_rerun.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tatbot_pipeline.training.runner import checkpoint_step
from tests.dagster_dev import dagster_dev, fresh_instance, project_dir

pytestmark = [pytest.mark.xdist_group("daemon"), pytest.mark.yields_cpu]
BOUND_S = 600  # a bound on each wait, not a target: each phase takes well under a minute alone
STEPS, SAVE_FREQ = 200, 20
# Everything this test starts yields the CPU to the suite's other worker, whose simulated arms run in real time:
# nothing here is timed.
NICE = 15


def _wait(what: str, done, log: Path):
    deadline = time.monotonic() + BOUND_S
    while not (result := done()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {BOUND_S} s\n--- dagster dev log (tail) ---\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return result


def _trainer_of(run_dir: Path) -> int | None:
    """Pid of a lerobot-train process writing into `run_dir`."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "lerobot" in cmdline and str(run_dir) in cmdline:
                return int(proc.name)
    return None


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.timeout(4 * BOUND_S)
def test_a_killed_training_worker_is_retried_and_resumes_its_checkpoint(pristine_recording: Path, tmp_path: Path):
    home, root = tmp_path / "home", tmp_path / "recordings"
    root.mkdir()
    version = home / "splits" / "v1"
    shutil.copytree(pristine_recording, version / "train")
    (home / "splits" / "latest").symlink_to("v1", target_is_directory=True)
    (version / "split.json").write_text(json.dumps({"version": "v1", "stroke_length": 8, "recordings": []}))
    project = project_dir(tmp_path / "project")
    config = project / "train.yaml"
    config.write_text(yaml.safe_dump({"ops": {"trained_policy": {"config": {
        "preset": "tiny_smolvla", "steps": STEPS, "save_freq": SAVE_FREQ}}}}))
    dagster_home = fresh_instance(tmp_path / "dagster_home")
    env = {"TATBOT_RECORDINGS_DIR": str(root), "TATBOT_PIPELINE_HOME": str(home)}
    cli_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TATBOT_")}, **env}
    log = tmp_path / "dagster_dev.log"

    def launch(config_file: Path) -> None:
        """README's command in the activated shell (scripts/setup.sh's `dagster` function), on this instance."""
        shell = (f"source {Path(sys.executable).parent / 'activate'} && export DAGSTER_HOME={dagster_home} && "
                 f"dagster job launch -j train_policy_job -c {config_file}")
        done = subprocess.run(["nice", "-n", str(NICE), "bash", "-c", shell], cwd=project, env=cli_env,
                              capture_output=True, text=True,
                              timeout=BOUND_S)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    with dagster_dev(dagster_home, env, log, cwd=project, niceness=NICE), dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        def runs() -> list[dg.DagsterRun]:
            """The training runs (loop_automation may evaluate the new checkpoint beside them: not this test's)."""
            return [r.dagster_run for r in instance.get_run_records(dg.RunsFilter(job_name="train_policy_job"))]

        launch(config)  # queued; the daemon launches it
        [first] = _wait("the launched training run", runs, log)
        assert first.remote_job_origin is not None, "launched through the code location, so it can be re-executed"
        run_dir = home / "outputs" / "train" / f"tiny_smolvla-{first.run_id[:8]}"
        _wait("a first checkpoint", lambda: (checkpoint_step(run_dir) or 0) >= SAVE_FREQ, log)
        trainer = _wait("the trainer process", lambda: _trainer_of(run_dir), log)
        worker = _parent_of(trainer)
        os.kill(worker, signal.SIGKILL)
        killed_at = checkpoint_step(run_dir)
        assert killed_at is not None and killed_at < STEPS, "the training had finished before the kill"

        failed = _wait("the killed run marked failed", lambda: (r := instance.get_run_by_id(first.run_id)).is_finished
                       and r, log)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        _wait("the killed attempt's trainer gone with its worker", lambda: not _alive(trainer), log)

        def retry() -> dg.DagsterRun | None:
            found = [r for r in runs() if r.parent_run_id == first.run_id]
            return found[0] if found and found[0].is_finished else None

        retried = _wait("the daemon's retry, finished", retry, log)
        assert retried.status == dg.DagsterRunStatus.SUCCESS, log.read_text()[-3000:]
        assert retried.root_run_id == first.run_id and retried.tags["dagster/retry_number"] == "1"
        [record] = instance.fetch_materializations(dg.AssetKey("trained_policy"), limit=10).records
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        assert record.run_id == retried.run_id
        assert Path(meta["checkpoint"]).is_relative_to(run_dir), "the retry resumed the same run dir"
        assert meta["steps"] == STEPS and meta["resumed_from_step"] >= killed_at
        checks = {e.check_name: e for e in (ev.get_dagster_event().asset_check_evaluation_data for ev in
                  instance.all_logs(retried.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION))}
        assert checks["loss_decreased"].passed, checks["loss_decreased"].description
        assert checks["loss_decreased"].metadata["attempts"].value == 2
        assert checks["loss_decreased"].metadata["logged_steps"].value == STEPS
        assert f"judged on {STEPS} logged steps of 2 attempts" in checks["loss_decreased"].description

        # Nothing is left blocking the next training: the retry, a tagged training run, got through the queue limit
        # of one while the killed run was there; no training run is left unfinished ("in progress" for automation)
        # and the lock is free.
        assert all(r.is_finished for r in runs())
        with open(home / "outputs" / "train" / ".training.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
