"""Health verdicts pass on a real tiny run and fail on deliberately broken ones."""

from __future__ import annotations

import math

import numpy as np

from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER
from tatbot_pipeline.training.health import batch_sane, grad_norm_stable, loss_decreased, run_health
from tatbot_pipeline.training.train_log import MetricsSeries


def series(loss, grad):
    n = len(loss)
    return MetricsSeries(step=list(range(1, n + 1)), loss=list(loss), grad_norm=list(grad), lr=[1e-4] * n,
                         update_s=[0.1] * n, data_s=[0.01] * n)


def test_healthy_curves_pass():
    s = series([2.0, 1.9, 1.7, 1.6, 1.4, 1.3, 1.2, 1.1], [1.5, 1.4, 1.6, 1.3, 1.2, 1.4, 1.3, 1.2])
    verdict = loss_decreased(s)
    assert verdict.passed
    assert math.isclose(verdict.details["first_quarter_loss"], 1.95) and math.isclose(verdict.details["last_quarter_loss"], 1.15)
    assert grad_norm_stable(s).passed


def test_rising_loss_fails():
    verdict = loss_decreased(series([1.0, 1.1, 1.3, 1.2, 1.5, 1.6, 1.8, 2.0], [1.0] * 8))
    assert not verdict.passed and "did not fall" in verdict.message


def test_nan_loss_and_nan_grad_fail():
    s = series([2.0, 1.5, float("nan"), 1.0], [1.0, float("nan"), 1.0, 1.0])
    assert not loss_decreased(s).passed and "step" in loss_decreased(s).message
    verdict = grad_norm_stable(s)
    assert not verdict.passed and verdict.details["nan_steps"] == [2]


def test_exploding_grad_fails():
    assert not grad_norm_stable(series([1.0] * 8, [1, 1, 2, 5, 20, 80, 300, 900])).passed  # grows 600x
    assert not grad_norm_stable(series([1.0] * 4, [1, 1, 1, 5e3])).passed  # above max_norm


def test_too_few_points_fail():
    verdict = loss_decreased(series([1.0, 0.5], [1.0, 1.0]))
    assert not verdict.passed and "log_freq" in verdict.message


def test_real_run_is_healthy(trained_run, train_split):
    run, _ = trained_run
    results = {r.name: r for r in run_health(run.metrics, train_split, run.checkpoint_dir)}
    assert set(results) == {"loss_decreased", "grad_norm_stable", "batch_sane"}
    assert results["grad_norm_stable"].passed, results["grad_norm_stable"].message
    assert results["batch_sane"].passed, results["batch_sane"].message
    assert results["batch_sane"].details["chunk_size"] == 8
    assert results["batch_sane"].details["image_keys"] == ["observation.images.realsense1", "observation.images.realsense2"]


def test_batch_outside_joint_limits_fails(trained_run, train_split):
    run, _ = trained_run
    # Shrink the envelope of left joint_1 so the recorded motion falls outside it.
    lower, upper = JOINT_LOWER.copy(), JOINT_UPPER.copy()
    upper[1] = lower[1] + 1e-3
    verdict = batch_sane(train_split, run.checkpoint_dir, lower=lower, upper=upper)
    assert not verdict.passed
    assert "left.joint_1.pos" in verdict.message and "URDF limits" in verdict.message


def test_batch_with_broken_stats_fails(trained_run, train_split, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    run, _ = trained_run
    ckpt = tmp_path / "pretrained_model"
    shutil.copytree(run.checkpoint_dir, ckpt)
    stats_file = next(ckpt.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    stats = load_file(stats_file)
    stats["action.std"] = np.full_like(stats["action.std"], np.nan)
    save_file(stats, stats_file)
    verdict = batch_sane(train_split, ckpt)
    assert not verdict.passed and "action: normalizer stats not finite" in verdict.message


def test_health_of_run_names_every_check_that_did_not_pass_for_this_run():
    from tatbot_pipeline.training.health import HEALTH_CHECKS, health_of_run

    all_passed = {name: ("run-1", "succeeded") for name in HEALTH_CHECKS}
    assert health_of_run(all_passed, "run-1") == (True, "")
    mixed = {"loss_decreased": ("run-1", "failed"), "grad_norm_stable": ("run-0", "succeeded")}
    passed, note = health_of_run(mixed, "run-1")
    assert not passed
    assert note == ("loss_decreased failed, grad_norm_stable not evaluated for this checkpoint, "
                    "batch_sane not evaluated for this checkpoint")
