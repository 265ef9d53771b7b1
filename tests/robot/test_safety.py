import math

import numpy as np
import pytest

from tatbot_pipeline.robot.safety import SafetyEnvelope, UnsafeAction
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER, READY_POSE


def test_clamps_to_urdf_limits_then_bounds_the_step():
    env = SafetyEnvelope.for_tatbot(fps=10)  # 0.15 rad per step, gripper 0.01 m
    wanted = READY_POSE.copy()
    wanted[1] = 5.0  # j1 upper limit is pi
    wanted[0] = READY_POSE[0] + 0.05  # a small move passes unchanged
    out = env.apply(wanted, READY_POSE)
    assert out.clamped and out.rate_limited
    assert out.joints[0] == pytest.approx(READY_POSE[0] + 0.05)
    assert out.joints[1] == pytest.approx(READY_POSE[1] + 0.15)
    # Held there, the target creeps up to the limit and stops at it.
    joints = out.joints
    for _ in range(40):
        joints = env.apply(wanted, joints).joints
    assert joints[1] == pytest.approx(math.pi, abs=1e-6)
    assert (joints >= JOINT_LOWER).all() and (joints <= JOINT_UPPER).all()


def test_step_bound_scales_with_fps():
    fast = SafetyEnvelope.for_tatbot(fps=50)
    out = fast.apply(READY_POSE + 1.0, READY_POSE)
    assert np.abs(out.joints - READY_POSE)[:6].max() == pytest.approx(1.5 / 50, rel=1e-4)
    assert not fast.apply(READY_POSE, READY_POSE).rate_limited


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_action_raises_and_names_the_joint(bad):
    action = READY_POSE.copy()
    action[9] = bad
    with pytest.raises(UnsafeAction, match=r"non-finite.*right\.joint_2\.pos"):
        SafetyEnvelope.for_tatbot(fps=10).apply(action, READY_POSE)


def test_wrong_action_size_is_refused():
    with pytest.raises(UnsafeAction, match="7 values.*14 joints"):
        SafetyEnvelope.for_tatbot(fps=10).apply(READY_POSE[:7], READY_POSE)
    with pytest.raises(ValueError, match="fps must be > 0"):
        SafetyEnvelope.for_tatbot(fps=0)
