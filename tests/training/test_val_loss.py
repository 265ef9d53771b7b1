"""Validation loss at each saved checkpoint of the session's real tiny training run."""

from __future__ import annotations

import math
import shutil

import pytest

from tatbot_pipeline.training.val_loss import saved_checkpoints, validation_losses


def test_every_saved_checkpoint_gets_a_val_loss_on_the_same_samples(trained_run, train_split, tmp_path):
    run, _ = trained_run
    val = shutil.copytree(train_split, tmp_path / "val")  # a LeRobot dataset the run did not write
    steps = sorted(saved_checkpoints(run.run_dir))
    assert steps == [3, 6]  # save_freq 3 over 6 steps
    losses = validation_losses(run.run_dir, val, max_samples=8, batch_size=4)
    assert sorted(losses) == steps and all(math.isfinite(v) and v > 0 for v in losses.values())
    again = validation_losses(run.run_dir, val, max_samples=8, batch_size=4)
    assert again == pytest.approx(losses)  # same samples, same noise: comparable across checkpoints and runs


def test_at_most_limit_checkpoints_are_scored_and_the_last_is_kept(tmp_path):
    for step in range(0, 200, 10):
        d = tmp_path / "checkpoints" / f"{step:06d}" / "pretrained_model"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"")
    (tmp_path / "checkpoints" / "last").mkdir()  # lerobot's "last" link is not a step
    picked = sorted(saved_checkpoints(tmp_path, limit=5))
    assert len(picked) == 5 and picked[0] == 0 and picked[-1] == 190
