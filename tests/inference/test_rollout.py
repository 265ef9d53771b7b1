"""The vla_infer core without MCP: device fallback, one rollout per robot, early cancel, backend failures."""

from __future__ import annotations

import threading

import pytest
import torch

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.policy import resolve_device
from tatbot_pipeline.inference.rollout import VLAInferInput, resolve_checkpoint, robot_lock, vla_infer
from tatbot_pipeline.robot.sim import SimRobot


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
    assert resolve_checkpoint("outputs/train/x", tmp_path) == (tmp_path / "outputs/train/x").resolve()
    assert resolve_checkpoint("/abs/ckpt", tmp_path) == resolve_checkpoint("/abs/ckpt", tmp_path / "other")


def test_a_held_robot_lock_refuses_the_rollout(act_checkpoint, tmp_path):
    made = []
    with robot_lock("sim"):
        out = vla_infer(request(act_checkpoint), PipelineSettings(home=tmp_path), factory=lambda *a: made.append(a))
    assert not out.success and "another rollout is already running on the sim robot" in out.message
    assert made == []


def test_cancel_before_the_loop_moves_nothing(act_checkpoint, tmp_path):
    made = []
    stop = threading.Event()
    stop.set()
    out = vla_infer(request(act_checkpoint), PipelineSettings(home=tmp_path), stop=stop, factory=lambda *a: made.append(a))
    assert not out.success and "cancelled by the client before the robot moved" in out.message
    assert made == []


def test_a_robot_without_the_policys_cameras_is_refused_before_connecting(act_checkpoint, tmp_path):
    robots = []

    def blind(scene, cameras, enable_realsense):
        robots.append(SimRobot(cameras={}))
        return robots[-1]

    out = vla_infer(request(act_checkpoint), PipelineSettings(home=tmp_path), factory=blind)
    assert not out.success
    assert "looks at cameras ['realsense1', 'realsense2'] but the tatbot-sim robot has none" in out.message
    assert "enable_realsense=true" in out.message and robots[0].commands == []


def test_hardware_backend_refuses_a_scene_it_cannot_run_before_moving(act_checkpoint, tmp_path, monkeypatch, pristine_recording):
    import shutil

    monkeypatch.setenv("TATBOT_SCENES_DIR", str(tmp_path))
    shutil.copy(pristine_recording / "scene.yaml", tmp_path / "lab.yaml")  # has arms and RealSense entries
    out = vla_infer(request(act_checkpoint, scene="lab", enable_realsense=True), PipelineSettings(home=tmp_path),
                    backend="tatbot")
    assert not out.success and out.num_steps == 0
    # The recording's arm config files live on the robot node (tests/robot/test_tatbot*.py drive the real driver).
    assert out.message.startswith("RobotError: left arm: arms.arm_l_config_filepath /home/tatbot/config/trossen/arm_l.yaml "
                                  "does not exist")
