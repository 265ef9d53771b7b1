import math

import numpy as np
import pytest

from tatbot_pipeline.robot.base import CameraFailure, Robot, RobotDisconnected, check_frames, joints_of
from tatbot_pipeline.robot.sim import SimFaults, SimRobot
from tatbot_pipeline.robot.spec import READY_POSE, SLEEP_POSE

CAMS = {"realsense1": (48, 64), "realsense2": (48, 64)}


def test_is_a_robot_and_the_context_manager_disconnects():
    robot = SimRobot(cameras=CAMS)
    assert isinstance(robot, Robot)
    with robot as r:
        assert r.is_connected
        obs = r.observe()
    assert not robot.is_connected
    np.testing.assert_allclose(joints_of(obs), SLEEP_POSE, atol=1e-6)
    assert obs["realsense1"].shape == (48, 64, 3) and obs["realsense1"].any()
    check_frames(obs, CAMS)


class StepClock:
    """The sim's clock, stepped by the test: the lag is a function of simulated time, not of this machine's speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_joints_lag_behind_a_non_blocking_target_and_blocking_moves_arrive():
    clock = StepClock()
    with SimRobot(start=READY_POSE, clock=clock) as robot:
        target = READY_POSE.copy()
        target[0] += 0.2
        robot.send(target, goal_time=0.2)  # time constant: half the goal time, 0.1 s
        assert joints_of(robot.observe())[0] == pytest.approx(READY_POSE[0], abs=1e-6)  # no time passed: not moved
        clock.now += 0.05
        moved = joints_of(robot.observe())[0] - READY_POSE[0]
        assert moved == pytest.approx(0.2 * (1 - math.exp(-0.5)), abs=1e-5)  # on its way, not there: first-order lag
        clock.now += 0.4
        remaining = target[0] - joints_of(robot.observe())[0]
        assert remaining == pytest.approx(0.2 * math.exp(-4.5), abs=1e-5)
        robot.send(SLEEP_POSE, goal_time=1.8, blocking=True)
        np.testing.assert_allclose(joints_of(robot.observe()), SLEEP_POSE, atol=1e-6)


def test_injected_disconnect_drops_the_link_once():
    with SimRobot(faults=SimFaults(disconnect_at=2)) as robot:
        robot.observe()
        with pytest.raises(RobotDisconnected, match="not connected"):
            robot.observe()
        assert not robot.is_connected
        with pytest.raises(RobotDisconnected):
            robot.send(READY_POSE, 0.2)
        robot.connect()
        robot.observe()  # the link came back


def test_injected_camera_failure_gives_black_frames_that_check_frames_catches():
    with SimRobot(cameras=CAMS, faults=SimFaults(camera_failure_at=2)) as robot:
        check_frames(robot.observe(), CAMS)
        obs = robot.observe()
        assert not obs["realsense1"].any() and obs["realsense2"].any()
        with pytest.raises(CameraFailure, match="realsense1: black frame"):
            check_frames(obs, CAMS)


def test_refuses_targets_a_safety_envelope_would_have_stopped():
    with SimRobot() as robot:
        bad = READY_POSE.copy()
        bad[3] = 3.0
        with pytest.raises(ValueError, match="outside the URDF limits"):
            robot.send(bad, 0.2)
        assert robot.commands == []
