import importlib.util

import pytest

from tatbot_pipeline.robot.backends import robot_factory
from tatbot_pipeline.robot.scene import resolve_scene


def test_missing_hardware_packages_fail_with_an_install_hint(tmp_path):
    # This dev machine has stock LeRobot (no tatbot robot) and no RealSense SDK, as CI does.
    assert importlib.util.find_spec("lerobot.robots.tatbot") is None
    with pytest.raises(RuntimeError, match=r"tatbot's hardware packages.*pyrealsense2.*'sim' backend"):
        robot_factory("tatbot")(resolve_scene("default", tmp_path), {}, True)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown robot backend 'ur5'; choose one of \['sim', 'tatbot'\]"):
        robot_factory("ur5")
