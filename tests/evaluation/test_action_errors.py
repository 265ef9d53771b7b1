"""Metrics against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from tatbot_pipeline.evaluation.action_errors import action_errors, latency


def test_action_errors_match_hand_computation():
    recorded = np.zeros((4, 14), dtype=np.float32)
    predicted = np.zeros((4, 14), dtype=np.float32)
    predicted[:, 0] = [0.1, -0.1, 0.3, -0.3]  # left.joint_0: |e| = .1 .1 .3 .3 -> MAE .2, MSE (.01+.01+.09+.09)/4 = .05
    predicted[2, 13] = 0.04  # right.gripper: one frame off by .04 -> MAE .01, MSE .0004
    chunk_step = np.array([0, 1, 0, 1])
    e = action_errors(predicted, recorded, chunk_step)
    assert e.mae_per_joint["left.joint_0.pos"] == pytest.approx(0.2)
    assert e.mse_per_joint["left.joint_0.pos"] == pytest.approx(0.05)
    assert e.mae_per_joint["right.gripper.pos"] == pytest.approx(0.01)
    assert e.mse_per_joint["right.gripper.pos"] == pytest.approx(0.0004)
    assert e.mae_per_joint["left.joint_1.pos"] == 0
    assert e.mae_per_arm["left"] == pytest.approx(0.8 / 28)  # sum |e| = .8 over 4 frames x 7 joints
    assert e.mae_per_arm["right"] == pytest.approx(0.04 / 28)
    assert e.mae == pytest.approx(0.84 / 56)
    assert e.max_abs == pytest.approx(0.3)
    # chunk step 0: frames 0, 2 -> |e| sum .1 + .3 + .04 over 2*14 values; step 1: frames 1, 3 -> .4 over 28
    assert e.mae_per_chunk_step == pytest.approx([0.44 / 28, 0.4 / 28])


def test_action_errors_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        action_errors(np.zeros((3, 14)), np.zeros((4, 14)), np.zeros(3, dtype=int))


def test_latency_summary():
    lat = latency(np.array([0.001] * 19 + [0.1]))
    assert lat.calls == 20
    assert lat.mean_s == pytest.approx((0.019 + 0.1) / 20)
    assert lat.max_s == pytest.approx(0.1)
    assert 0.001 <= lat.p95_s <= 0.1


def test_joints_the_policy_does_not_predict_are_left_out_of_the_means():
    recorded = np.zeros((2, 14), dtype=np.float32)
    predicted = np.zeros((2, 14), dtype=np.float32)
    predicted[:, 3] = 0.14  # left.joint_3
    predicted[:, 6] = 0.04  # left.gripper: constant in training, not predicted
    e = action_errors(predicted, recorded, np.array([0, 1]), not_predicted=("left.gripper.pos", "right.gripper.pos"))
    assert e.mae == pytest.approx(0.14 / 12) and e.mae_per_arm["left"] == pytest.approx(0.14 / 6)
    assert e.worst_joint == ("left.joint_3.pos", pytest.approx(0.14))
    assert e.mae_per_joint["left.gripper.pos"] == pytest.approx(0.04)  # still reported, shown as n/a in the UI
