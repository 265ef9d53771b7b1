"""Long moves start from rest: what the simulated controllers *received* after a policy step, checked setpoint by
setpoint.

The `trossen_arm` driver interpolates each command into setpoints (linear up to 0.2 s of goal time, a quintic above)
and starts a quintic with the velocity it last interpolated, even when that segment ended long ago: a park right
after a policy step first swings the wrong way. The controllers here (robot/armsim.py) log every setpoint the
unmodified driver streams to them; the backend records each long move it sends (`TatbotRobot.long_moves`); the
check is `robot/setpoints.py: wrong_way`, against `WRONG_WAY_TOLERANCE_RAD`.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tatbot_pipeline.config import PipelineSettings, RolloutLimits
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.robot import arming
from tatbot_pipeline.robot.scene import resolve_scene
from tatbot_pipeline.robot.setpoints import WRONG_WAY_TOLERANCE_RAD, wrong_way
from tatbot_pipeline.robot.sim_controllers import sim_controllers
from tatbot_pipeline.robot.spec import JOINT_NAMES
from tatbot_pipeline.robot.tatbot import TatbotRobot
from tests.inference.conftest import act_checkpoint, checkpoint_home  # noqa: F401  (shared session fixtures)
from tests.robot.conftest import write_scene

# A fast policy step away from ready on the joints that swung the most (0.12 rad in 0.2 s: within the envelope's
# 1.5 rad/s at 10 Hz): left joint_3 and joint_5, right joint_0.
STEP = {"left.joint_3.pos": 0.12, "left.joint_5.pos": 0.12, "right.joint_0.pos": -0.12}


@pytest.fixture
def logged(tmp_path):
    """Two simulated controllers that log every setpoint they receive, and a scene pointing at them (the default
    scene's 1.8 s slow goal time, where the swing was measured)."""
    with sim_controllers(tmp_path / "controllers", log_setpoints=True) as sims:
        write_scene(tmp_path / "scenes", "logged", sims["left"].host, sims["right"].host, goal_time_slow=1.8)
        yield sims, resolve_scene("logged", tmp_path / "scenes")


def policy_step(ready: np.ndarray) -> np.ndarray:
    target = ready.astype(np.float64).copy()
    for name, delta in STEP.items():
        target[JOINT_NAMES.index(name)] += delta
    return target


def received(robot: TatbotRobot, sims) -> list[dict]:
    """Each long move's wrong-way excursion per arm, from the controllers' logs (complete once they stopped)."""
    for sim in sims.values():
        sim.stop()  # flushes the log
    return wrong_way(robot.long_moves, {side: sim.setpoint_log for side, sim in sims.items()})


def assert_no_wrong_way(checked: list[dict], expected: set[str]) -> None:
    assert {c["what"] for c in checked} >= expected, checked
    worst = max(checked, key=lambda c: c["worst_rad"])
    assert worst["worst_rad"] <= WRONG_WAY_TOLERANCE_RAD, (
        f"{worst['what']}: {worst['worst']} went {worst['worst_rad']:.4f} rad the wrong way", checked)


def test_a_park_right_after_a_policy_step_never_heads_away_from_its_goal(logged):
    sims, scene = logged
    robot = TatbotRobot(scene, enable_realsense=False, camera_source="sim")
    robot.connect()
    try:
        robot.send(scene.ready, scene.goal_time_slow, blocking=True)
        robot.send(policy_step(scene.ready), scene.goal_time_fast)  # as the loop sends it: non-blocking
        outcome = robot.return_to(scene.ready, scene.goal_time_slow)  # the park: back to ready ...
    finally:
        robot.disconnect()  # ... then home
    assert outcome == {"left": None, "right": None}
    assert_no_wrong_way(received(robot, sims), {"move", "return to ready", "home pose on disconnect"})


def test_a_rollout_stopped_mid_stroke_parks_from_rest(logged, tmp_path, act_checkpoint):
    """vla_infer on the tatbot backend, stopped at step 3 (a client that went away): the park that follows is the
    long move right after a policy step, on every arm."""
    sims, scene = logged
    settings = PipelineSettings(home=tmp_path / "home", robot_state_dir=tmp_path / "state", camera_source="sim",
                                scenes=tmp_path / "scenes")
    arming.arm(settings.robot_state_dir, minutes=10, by="test operator")
    robots: list[TatbotRobot] = []
    control = RolloutControl()

    def factory(scene, cameras, enable_realsense):
        robots.append(TatbotRobot(scene, enable_realsense=enable_realsense, camera_source="sim",
                                  limits=settings.rollout_limits))
        return robots[-1]

    def progress(fraction: float, message: str) -> None:
        if message == "step 3 of 20":
            control.request_stop("the client went away (test)")

    request = VLAInferInput(policy="act", checkpoint_path=str(act_checkpoint), scene="logged", device="cpu",
                            max_steps=20, enable_realsense=True, fps=10)
    out = vla_infer(request, settings, backend="tatbot", factory=factory, control=control, progress=progress,
                    eval_root=tmp_path / "eval")
    assert not out.success and out.stop_reason == "the client went away (test)" and 3 <= out.num_steps <= 4, out.message
    assert out.parked and "robot back at ready and disconnected" in out.message
    assert_no_wrong_way(received(robots[0], sims), {"move", "return to ready", "home pose on disconnect"})


def test_an_arm_still_moving_is_held_and_named_instead_of_sent_the_long_move(logged):
    """The rest wait is bounded: an arm that has not stopped by then is a stop naming the joint, and it is not sent
    the long move (here the arms are still settling from a fast step when the bound runs out)."""
    sims, scene = logged
    robot = TatbotRobot(scene, enable_realsense=False, camera_source="sim")
    robot.connect()
    try:
        robot.send(scene.ready, scene.goal_time_slow, blocking=True)
        # No time to settle, and a bound no arm meets 0.1 s after a fast step (the simulated wrist creeps for a second)
        robot.limits = RolloutLimits(rest_velocity_rad_s=1e-6, rest_timeout_s=1e-3)
        robot.send(policy_step(scene.ready), scene.goal_time_fast)
        moves = len(robot.long_moves)
        outcome = robot.return_to(scene.ready, scene.goal_time_slow)
        assert outcome["left"] is not None, outcome
        assert re.search(r"left arm \(arms.ip_address_l\) did not reach ready: left arm \(arms.ip_address_l\): "
                         r"joint_\d still moves at [0-9.]+ rad/s 0.001 s after it was held .* return to ready not sent",
                         outcome["left"]), outcome
        sent = {side for move in robot.long_moves[moves:] for side in move.sides}
        assert not sent & {side for side, problem in outcome.items() if problem}  # a held arm was sent nothing
    finally:
        robot.limits = RolloutLimits()
        robot.disconnect()  # with the default bound the arms settle and park
    assert robot.long_moves[-1].what == "home pose on disconnect" and robot.long_moves[-1].sides == ("left", "right")
