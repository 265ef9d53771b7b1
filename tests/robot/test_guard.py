import math

import numpy as np
import pytest

from tatbot_pipeline.robot.guard import GuardedRobot, UnsafeCommand, check_command
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.robot.spec import JOINT_UPPER, READY_POSE, SLEEP_POSE


@pytest.mark.parametrize("index, value, match", [
    (5, math.nan, r"non-finite target left.joint_5.pos=nan"),
    (9, math.inf, r"non-finite target right.joint_2.pos=inf"),
    (3, 2.0, r"outside the URDF limits left.joint_3.pos=2.0000 not in \[-1.5708, 1.5708\]"),
    (13, 0.05, r"right.gripper.pos=0.0500 not in \[0.0000, 0.0400\]"),
])
def test_bad_targets_are_refused_naming_the_joint(index, value, match):
    pose = READY_POSE.astype(np.float64)
    pose[index] = value
    with pytest.raises(UnsafeCommand, match=match):
        check_command(pose, 1.0)


@pytest.mark.parametrize("goal_time", [math.nan, -1.0, 0.0, math.inf, 1000.0, "fast"])
def test_bad_goal_times_are_refused(goal_time):
    with pytest.raises(UnsafeCommand, match="goal time"):
        check_command(READY_POSE, goal_time)


def test_a_target_a_hair_past_a_limit_is_clipped_not_refused():
    pose = READY_POSE.copy()
    pose[13] = JOINT_UPPER[13] + 5e-5
    assert check_command(pose, 0.2)[13] == pytest.approx(JOINT_UPPER[13])
    with pytest.raises(UnsafeCommand, match="14"):
        check_command(READY_POSE[:7], 0.2)


def test_guarded_robot_refuses_before_the_robot_sees_anything_and_can_be_revoked():
    sim = SimRobot(start=SLEEP_POSE)
    robot = GuardedRobot(sim)
    robot.connect()
    bad = READY_POSE.copy()
    bad[0] = np.nan
    with pytest.raises(UnsafeCommand):
        robot.send(bad, 0.2)
    assert sim.commands == []
    robot.send(READY_POSE, 1.8, blocking=True)
    assert len(sim.commands) == 1
    robot.revoke("driver call hung for 10 s")
    with pytest.raises(UnsafeCommand, match="abandoned \\(driver call hung"):
        robot.send(READY_POSE, 1.8)
    with pytest.raises(UnsafeCommand, match="abandoned"):
        robot.disconnect()
    assert len(sim.commands) == 1 and sim.is_connected
