"""Real `lerobot-train` subprocesses on the tiny preset: checkpoint loads, progress streams, resume continues."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tatbot_pipeline.checkpoints import last_checkpoint
from tatbot_pipeline.training.preflight import PreflightFailed
from tatbot_pipeline.training.train_log import MetricsSeries, parse_log
from tatbot_pipeline.training.presets import TrainOptions
from tatbot_pipeline.training.runner import (
    METRICS_FILE,
    TrainingFailed,
    checkpoint_step,
    failure_message,
    train_policy,
    training_env,
    unfinished_runs,
)
from tests.training.conftest import STEPS


def test_tiny_training_writes_a_loadable_checkpoint(trained_run, train_split):
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.pretrained import PreTrainedPolicy
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    run, _ = trained_run
    assert run.checkpoint_dir == run.run_dir / "checkpoints" / "last" / "pretrained_model"
    assert run.steps == STEPS and run.resumed_from is None
    policy = SmolVLAPolicy.from_pretrained(run.checkpoint_dir)
    assert isinstance(policy, PreTrainedPolicy)
    assert policy.config.chunk_size == policy.config.n_action_steps == 8  # the split's stroke length
    preprocessor, postprocessor = make_pre_post_processors(policy.config, pretrained_path=str(run.checkpoint_dir))
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    frame = LeRobotDataset("local/split", root=train_split, video_backend="pyav")[0]
    batch = {k: (v.unsqueeze(0) if isinstance(v, torch.Tensor) else [v])
             for k, v in frame.items() if k.startswith("observation") or k == "task"}
    action = postprocessor(policy.select_action(preprocessor(batch)))
    assert action.shape == (1, 14) and torch.isfinite(action).all()


def test_progress_streams_and_metrics_are_recorded(trained_run):
    run, lines = trained_run
    # The run log gets a summary: the loss ~10 times, checkpoints; the config dump and step lines stay in the file.
    assert [line for line in lines if line.startswith("step ")] == [
        f"step {s}/{STEPS}: loss {run.metrics.loss[s - 1]:.4g}, grad norm {run.metrics.grad_norm[s - 1]:.4g}"
        for s in range(1, STEPS + 1)]  # every step: 6 steps are fewer than 10 reports
    assert "checkpoint saved at step 3" in lines and "checkpoint saved at step 6" in lines
    assert not any("'batch_size'" in line or " smpl:" in line for line in lines), "config dump or raw step lines"
    log_text = run.log_path.read_text()
    assert "Start offline training" in log_text and "batch_size" in log_text  # the full detail is in the file
    assert not any(line.startswith("Training:") for line in lines), "tqdm bar leaked into the log"
    assert run.metrics.step == list(range(1, STEPS + 1))  # log_freq=1 in the tiny preset
    assert all(0 < loss < 100 for loss in run.metrics.loss)
    saved = MetricsSeries.load(run.run_dir / METRICS_FILE)
    assert saved.loss == run.metrics.loss
    assert run.log_path.read_text().count(" loss:") == STEPS
    assert run.attempts == 1
    # torchcodec's report of the FFmpeg libraries it could not load stays in the log, summed up in one line
    if "Could not load libtorchcodec" in log_text:
        assert not any("libavutil" in line or "libtorchcodec" in line for line in lines), lines
        assert sum("torchcodec found no FFmpeg library" in line for line in lines) == 1


def test_resume_continues_from_the_last_checkpoint(trained_run, tmp_path):
    run, _ = trained_run
    run_dir = tmp_path / "outputs" / "train" / run.run_dir.name
    shutil.copytree(run.run_dir, run_dir, symlinks=True)
    # The copied train_config points at the original output dir; a resume must write into the copy.
    config_path = last_checkpoint(run_dir) / "train_config.json"
    cfg = json.loads(config_path.read_text())
    cfg["output_dir"] = str(run_dir)
    config_path.write_text(json.dumps(cfg))

    resumed = train_policy("tiny_smolvla", Path(cfg["dataset"]["root"]), run_dir, tmp_path / "hf",
                           TrainOptions(steps=STEPS + 2, save_freq=3), on_line=lambda line: None)
    assert resumed.resumed_from == STEPS
    assert checkpoint_step(run_dir) == STEPS + 2
    assert resumed.argv[1] == "--resume=true"
    # Old rows are kept, new ones appended: one row per step, no duplicates.
    assert resumed.metrics.step == list(range(1, STEPS + 3))
    assert resumed.metrics.loss[:STEPS] == run.metrics.loss

    again = train_policy("tiny_smolvla", Path(cfg["dataset"]["root"]), run_dir, tmp_path / "hf",
                         TrainOptions(steps=STEPS + 2), on_line=lambda line: None)
    assert again.argv == () and again.steps == STEPS + 2, "a finished run must not train again"


def test_failed_training_raises_with_the_log_tail(train_split, tmp_path):
    bad = TrainOptions(steps=2, extra_args=("--policy.no_such_field=1",))
    with pytest.raises(TrainingFailed, match="exited with code") as err:
        train_policy("tiny_smolvla", train_split, tmp_path / "run", tmp_path / "hf", bad, on_line=lambda line: None)
    assert "no_such_field" in str(err.value)
    assert (tmp_path / "logs" / "run.log").is_file()


def test_missing_split_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="training_splits"):
        train_policy("tiny_smolvla", tmp_path / "nope", tmp_path / "run", tmp_path / "hf")


def test_trainer_env_keeps_caches_under_the_pipeline_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = training_env(tmp_path / "hf")
    assert env["HF_HOME"] == str(tmp_path / "hf")
    assert env["HF_DATASETS_CACHE"].startswith(str(tmp_path / "hf"))
    assert env["HF_HUB_OFFLINE"] == "1"


def test_second_training_waits_for_the_first(tmp_path):
    import threading

    from tatbot_pipeline.training.runner import training_lock

    events: list[str] = []
    with training_lock(tmp_path):
        waiter = threading.Thread(target=lambda: training_lock(tmp_path, events.append).__enter__() or events.append("got it"))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive(), "the second training must block while the first holds the lock"
        assert events and "waiting" in events[0]
    waiter.join(timeout=5.0)
    assert events[-1] == "got it"


def _children_running(program: str) -> list[int]:
    """Pids of this process's children whose command line contains `program`."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if program in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


def test_a_killed_trainer_is_named_and_its_retry_resumes_with_every_step_judged(train_split, train_home, tmp_path):
    """SIGKILL the trainer (what the out-of-memory killer does) once a checkpoint is saved: the failure says so, and
    the next attempt resumes from that checkpoint with the killed attempt's logged steps kept in the metrics."""
    import os
    import signal

    run_dir, killed = tmp_path / "outputs" / "train" / "tiny_smolvla-killed", []

    def kill_after_checkpoint(line: str) -> None:
        # lerobot says "Checkpoint policy after step N" before it writes it: wait until one is on disk (`last`)
        if checkpoint_step(run_dir) is not None and not killed:
            killed.extend(_children_running("lerobot"))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    options = TrainOptions(steps=40, save_freq=4)
    with pytest.raises(TrainingFailed) as err:
        train_policy("tiny_smolvla", train_split, run_dir, tmp_path / "hf", options, models_home=train_home,
                     on_line=kill_after_checkpoint)
    assert killed, "no trainer process found to kill"
    message = str(err.value)
    assert message.startswith("lerobot-train was killed by SIGKILL: most often the kernel's out-of-memory killer")
    assert "base model" not in message, "the base-model hint only when the log says one was missing"
    killed_at = checkpoint_step(run_dir)  # the trainer runs ahead of the lines read from its log
    assert killed_at is not None and 4 <= killed_at < 40
    # what a new run of the same preset on the same split names before it starts over elsewhere
    assert unfinished_runs(run_dir.parent, "tiny_smolvla", train_split) == [(run_dir, killed_at)]
    assert unfinished_runs(run_dir.parent, "smolvla", train_split) == []

    resumed = train_policy("tiny_smolvla", train_split, run_dir, tmp_path / "hf", options, models_home=train_home,
                           on_line=lambda line: None)
    assert (resumed.resumed_from, resumed.steps, resumed.attempts) == (killed_at, 40, 2)
    assert resumed.metrics.step == list(range(1, 41)), "every step of both attempts, none twice"
    first_attempt = parse_log(resumed.log_path.read_text().split("attempt 2:")[0].splitlines(), 1)
    assert resumed.metrics.loss[:killed_at] == first_attempt.loss[:killed_at], "the killed attempt's steps"


def test_a_corrupt_split_fails_before_training_naming_the_file(train_split, tmp_path):
    split = tmp_path / "split"
    shutil.copytree(train_split, split)
    data = sorted(split.glob("data/*/*.parquet"))[0]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a copy cut short
    with pytest.raises(PreflightFailed, match=f"{data}: not a readable parquet file"):
        train_policy("tiny_smolvla", split, tmp_path / "outputs" / "run", tmp_path / "hf")
    assert not (tmp_path / "outputs" / "logs").exists(), "lerobot-train must not have started"

    missing = sorted(train_split.glob("videos/**/*.mp4"))[0].relative_to(train_split)
    shutil.rmtree(split)
    shutil.copytree(train_split, split)
    (split / missing).unlink()
    with pytest.raises(PreflightFailed, match=f"video {missing} missing"):
        train_policy("tiny_smolvla", split, tmp_path / "outputs" / "run", tmp_path / "hf")


def test_an_unwritable_output_dir_fails_before_training_naming_it(train_split, tmp_path):
    (tmp_path / "outputs").write_text("a file where the outputs dir should be")
    with pytest.raises(PreflightFailed, match=f"{tmp_path / 'outputs' / 'train'}: the training output dir is not "
                       "writable"):
        train_policy("tiny_smolvla", train_split, tmp_path / "outputs" / "train" / "run", tmp_path / "hf")


@pytest.mark.parametrize("rc, tail, missing, expected, hint", [
    (-9, [], False, "lerobot-train was killed by SIGKILL: most often the kernel's out-of-memory killer", False),
    (137, [], False, "lerobot-train was killed by SIGKILL", False),
    (-15, [], False, "lerobot-train was killed by SIGTERM: stopped from outside", False),
    (1, ["ValueError: bad config"], False, "lerobot-train exited with code 1", False),
    (1, ["LocalEntryNotFoundError: ..."], True, "lerobot-train exited with code 1", True),
])
def test_failure_messages_fit_the_failure(tmp_path, rc, tail, missing, expected, hint):
    message = failure_message(rc, tmp_path / "run.log", tail, missing)
    assert message.startswith(expected) and f"full log: {tmp_path / 'run.log'}" in message
    assert ("could not find a base model" in message) == hint
