"""The vla_infer core without MCP: device fallback, one rollout per robot, early cancel, backend failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.policy.loading import resolve_device
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.loop import RolloutStopped, check_stop, wait_until_at
from tatbot_pipeline.inference.rollout import VLAInferInput, checkpoint_location, vla_infer
from tatbot_pipeline.robot.arming import arm
from tatbot_pipeline.robot.lock import RobotLock
from tatbot_pipeline.robot.base import joints_of
from tatbot_pipeline.robot.safety import REVOLUTE, RolloutLimits
from tatbot_pipeline.robot.sim import SimFaults, SimRobot
from tatbot_pipeline.robot.spec import READY_POSE, SLEEP_POSE


def request(checkpoint, **kw) -> VLAInferInput:
    return VLAInferInput(policy="act", checkpoint_path=str(checkpoint), device="cpu", fps=30, **kw)


def test_cuda_falls_back_to_cpu_with_a_note():
    device, note = resolve_device("cuda")
    if torch.cuda.is_available():
        assert (device, note) == ("cuda", None)
    else:
        assert device == "cpu" and "CUDA is not available" in note
    assert resolve_device("cpu") == ("cpu", None)
    with pytest.raises(ValueError, match="'cuda' or 'cpu'"):
        resolve_device("tpu")


def test_relative_checkpoints_live_under_the_home(tmp_path):
    assert checkpoint_location("outputs/train/x", tmp_path) == (tmp_path / "outputs/train/x").resolve()
    assert checkpoint_location("/abs/ckpt", tmp_path) == checkpoint_location("/abs/ckpt", tmp_path / "other")


def settings(tmp_path) -> PipelineSettings:
    return PipelineSettings(home=tmp_path, robot_state_dir=tmp_path / "robot-state")


def test_a_held_robot_lock_refuses_the_rollout(act_checkpoint, tmp_path, caplog):
    made = []
    with RobotLock(tmp_path / "robot-state", "sim", owner="robot_eval run 1234"):
        out = vla_infer(request(act_checkpoint), settings(tmp_path), factory=lambda *a: made.append(a))
    assert not out.success and "another rollout is already running on the sim robot" in out.message
    assert "robot_eval run 1234" in caplog.text and "robot_eval run 1234" not in out.message  # who: the log only
    assert made == []


def test_cancel_before_the_loop_moves_nothing(act_checkpoint, tmp_path):
    made = []
    control = RolloutControl()
    control.request_stop("cancelled by the client")
    out = vla_infer(request(act_checkpoint), settings(tmp_path), control=control, factory=lambda *a: made.append(a))
    assert not out.success and "cancelled by the client before the robot moved" in out.message
    assert made == [] and control.done.is_set()


def test_a_robot_without_the_policys_cameras_is_refused_before_connecting(act_checkpoint, tmp_path):
    robots = []

    def blind(scene, cameras, enable_realsense):
        robots.append(SimRobot(cameras={}))
        return robots[-1]

    out = vla_infer(request(act_checkpoint), settings(tmp_path), factory=blind)
    assert not out.success
    assert "looks at cameras ['realsense1', 'realsense2'] but the tatbot-sim robot has none" in out.message
    assert "enable_realsense=true" in out.message and robots[0].commands == []


def test_hardware_backend_refuses_a_scene_it_cannot_run_before_moving(act_checkpoint, tmp_path, monkeypatch, pristine_recording):
    import shutil

    shutil.copy(pristine_recording / "scene.yaml", tmp_path / "lab.yaml")  # has arms and RealSense entries
    arm(tmp_path / "robot-state", minutes=5, by="test@hog")
    out = vla_infer(request(act_checkpoint, scene="lab", enable_realsense=True),
                    PipelineSettings(home=tmp_path, scenes=tmp_path, robot_state_dir=tmp_path / "robot-state"),
                    backend="tatbot")
    assert not out.success and out.num_steps == 0
    # The recording's arm config files live on the robot node (tests/robot/test_tatbot*.py drive the real driver).
    assert out.message.startswith("RobotError: left arm: arms.arm_l_config_filepath /home/tatbot/")
    assert "arm_l.yaml does not exist — fix the path in the scene" in out.message


def test_a_wrong_checkpoint_digest_is_refused_before_anything_loads(act_checkpoint, tmp_path):
    from tatbot_pipeline.digest import checkpoint_sha256

    made, progress = [], []
    right = checkpoint_sha256(act_checkpoint)
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    out = vla_infer(request(act_checkpoint, checkpoint_sha256=wrong), settings(tmp_path),
                    factory=lambda *a: made.append(a), progress=lambda f, m: progress.append(m))
    assert not out.success and "changed since it was evaluated" in out.message and "nothing was loaded" in out.message
    assert made == [] and not any(m.startswith("loading act policy") for m in progress)

    ok = vla_infer(request(act_checkpoint, checkpoint_sha256=right, dry_run=True), settings(tmp_path))
    assert ok.success and ok.checkpoint_sha256 == right


class TickingClock:
    """The sim's clock, 0.1 s further on every read: how far an arm lags depends on the polls, not this machine."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def test_the_loop_waits_for_a_lagging_arm_to_reach_ready():
    # A simulator short of CPU: the blocking move to ready has returned, the arm is still on its way.
    with SimRobot(start=SLEEP_POSE, clock=TickingClock()) as robot:
        robot.send(READY_POSE, goal_time=0.2)  # time constant 0.1 s: e^-1 of the way left per read
        wait_until_at(robot, READY_POSE, "ready", RolloutLimits())
        assert robot.observations > 3  # it was not there at the first look
        assert np.abs(joints_of(robot.observe()) - READY_POSE)[REVOLUTE].max() <= 0.02


def test_an_arm_held_off_ready_stops_the_rollout_before_it_starts():
    held = SimFaults(pushed_joint=3, push_rad=0.2, pushed_from=1)
    with SimRobot(start=READY_POSE, faults=held) as robot:
        with pytest.raises(RolloutStopped, match=r"did not reach ready within 0.5 s .*left\.joint_3\.pos still 0\.200"):
            wait_until_at(robot, READY_POSE, "ready", RolloutLimits(start_timeout_s=0.5))
        stopped = RolloutControl()
        stopped.request_stop("the client went away")
        with pytest.raises(RolloutStopped, match="the client went away"):  # a stop request ends the wait at once
            wait_until_at(robot, READY_POSE, "ready", RolloutLimits(), 
                          lambda: check_stop(stopped, time.perf_counter(), RolloutLimits(), None))
