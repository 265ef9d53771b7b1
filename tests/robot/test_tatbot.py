"""The tatbot backend before it touches the network: what the scene and the node's install must provide.

(Against the real driver and simulated controllers: test_tatbot_hil.py.)
"""

import importlib.util
import sys

import numpy as np
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.robot.backends import backend, robot_factory
from tatbot_pipeline.robot.base import RobotError
from tatbot_pipeline.robot.scene import builtin_scene, resolve_scene, scene_from_dict
from tatbot_pipeline.robot.spec import READY_POSE
from tatbot_pipeline.robot.tatbot import DEFAULT_MAX_EXTERNAL_EFFORT, TatbotRobot


def hil_scene(**arms):
    data = builtin_scene("hil")
    data["arms"].update({"ip_address_l": "127.0.0.2", "ip_address_r": "127.0.0.3", **arms})
    data["cams"] = {"realsenses": [{"name": f"realsense{i}", "width": 64, "height": 48, "fps": 30,
                                    "serial_number": f"12345678{i}"} for i in (1, 2)]}
    return scene_from_dict("hil", data)


def test_the_backend_needs_no_lerobot_fork():
    # This environment has stock lerobot 0.6.1, as the robot node now does: the fork's robot is not there.
    assert importlib.util.find_spec("lerobot.robots.tatbot") is None
    robot = TatbotRobot(hil_scene(), enable_realsense=False)
    assert robot.cameras == {} and not robot.is_connected
    assert backend("tatbot").moves_hardware and not backend("sim").moves_hardware


def test_without_the_arm_driver_the_hint_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "trossen_arm", None)  # what an environment without the hardware extra looks like
    with pytest.raises(RobotError, match=r"TATBOT_EXTRAS=hardware ./scripts/setup.sh.*'sim' backend"):
        TatbotRobot(hil_scene(), enable_realsense=False)


def test_a_scene_without_arm_addresses_is_refused(tmp_path):
    with pytest.raises(RobotError, match=r"scene default: arms.ip_address_l is missing"):
        robot_factory("tatbot")(resolve_scene("default", tmp_path), {}, True)


def test_what_the_scene_gets_wrong_is_refused_before_connecting(tmp_path):
    with pytest.raises(RobotError, match=r"left arm \(arms.ip_address_l\): arms.ip_address_l is not an IP address"):
        TatbotRobot(hil_scene(ip_address_l="arm-left.local"), enable_realsense=False)
    with pytest.raises(RobotError, match=r"right arm: arms.arm_r_config_filepath .*missing.yaml does not exist"):
        TatbotRobot(hil_scene(arm_r_config_filepath=str(tmp_path / "missing.yaml")), enable_realsense=False)
    with pytest.raises(RobotError, match=r"arms.max_external_effort must be > 0 Nm, got -1"):
        TatbotRobot(hil_scene(max_external_effort=-1), enable_realsense=False)


def test_the_collision_limit_comes_from_the_scene_or_the_caller():
    assert TatbotRobot(hil_scene(), enable_realsense=False).max_external_effort == DEFAULT_MAX_EXTERNAL_EFFORT
    assert TatbotRobot(hil_scene(max_external_effort=3.5), enable_realsense=False).max_external_effort == 3.5
    assert TatbotRobot(hil_scene(max_external_effort=3.5), enable_realsense=False, max_external_effort=2).max_external_effort == 2


def test_camera_source_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TATBOT_CAMERA_SOURCE", "sim")
    assert PipelineSettings.from_env().camera_source == "sim"
    monkeypatch.delenv("TATBOT_CAMERA_SOURCE")
    assert PipelineSettings.from_env().camera_source == "realsense"
    monkeypatch.setenv("TATBOT_CAMERA_SOURCE", "webcam")
    with pytest.raises(ValueError, match=r"camera source 'webcam' \(TATBOT_CAMERA_SOURCE\): choose one of \['realsense', 'sim'\]"):
        PipelineSettings.from_env()


def test_rendered_cameras_are_the_scenes_cameras_drawn_from_the_joints(tmp_path):
    robot = robot_factory("tatbot", PipelineSettings(home=tmp_path, camera_source="sim"))(hil_scene(), {}, True)
    assert robot.cameras == {"realsense1": (48, 64), "realsense2": (48, 64)}
    frames = robot.frame_source.read(READY_POSE)
    moved = robot.frame_source.read(np.zeros_like(READY_POSE))
    assert frames["realsense1"].shape == (48, 64, 3) and frames["realsense1"].any()
    assert not np.array_equal(frames["realsense1"], moved["realsense1"])  # the image follows the arms


@pytest.mark.skipif(importlib.util.find_spec("pyrealsense2") is not None, reason="pyrealsense2 is installed here")
def test_realsense_without_its_sdk_says_what_to_do(tmp_path):
    with pytest.raises(RobotError, match=r"pyrealsense2 is not installed.*TATBOT_EXTRAS=hardware.*TATBOT_CAMERA_SOURCE=sim"):
        robot_factory("tatbot", PipelineSettings(home=tmp_path))(hil_scene(), {}, True)
    # No cameras asked for, no SDK needed.
    assert robot_factory("tatbot", PipelineSettings(home=tmp_path))(hil_scene(), {}, False).cameras == {}


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown robot backend 'ur5'; choose one of \['sim', 'tatbot'\]"):
        robot_factory("ur5")
