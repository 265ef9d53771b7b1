"""The real tatbot: two Trossen WidowX AI arms via tatbot's LeRobot robot, RealSense cameras via pyrealsense2.

Everything hardware-specific is imported lazily when a TatbotRobot is made, so this module imports (and the pipeline runs)
on machines without the arm drivers. The robot class comes from tatbot's LeRobot fork (`lerobot.robots.tatbot`);
its driver hides failures (a disconnected arm reports its home pose, a failed camera read gives a black frame),
so `observe` turns both into errors the rollout can stop on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tatbot_pipeline.robot.base import Observation, Robot, RobotDisconnected, check_frames, joints_to_dict
from tatbot_pipeline.robot.scene import RobotScene

_INSTALL_HINT = (
    "the 'tatbot' robot backend needs tatbot's hardware packages on this node: tatbot's LeRobot fork "
    "(lerobot.robots.tatbot, with trossen_arm) and pyrealsense2 — install them on the robot node "
    "(e.g. `uv pip install -e ~/lerobot[tatbot,intelrealsense]`) or use the 'sim' backend"
)


class TatbotRobot(Robot):
    name = "tatbot"

    def __init__(self, scene: RobotScene, enable_realsense: bool) -> None:
        self.scene = scene
        self.enable_realsense = enable_realsense
        self.cameras = (
            {cam["name"]: (int(cam["height"]), int(cam["width"])) for cam in scene.realsenses} if enable_realsense else {}
        )
        # Built here, not in connect(): a node without the drivers fails before the rollout touches anything.
        self._robot: Any = self._make_robot()

    @property
    def is_connected(self) -> bool:
        return bool(self._robot.is_connected)

    def connect(self) -> None:
        self._robot.connect()
        if not self._robot.is_connected:
            raise RobotDisconnected(f"tatbot: arms or cameras did not connect (scene {self.scene.name}) — check power and network")

    def observe(self) -> Observation:
        self._require_arms()
        obs = self._robot.get_observation()
        check_frames(obs, self.cameras)
        return obs

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        self._require_arms()
        self._robot.send_action(joints_to_dict(joints), goal_time=goal_time, safe=blocking)
        return np.asarray(joints, dtype=np.float32)

    def disconnect(self) -> None:
        self._robot.disconnect()

    def _require_arms(self) -> None:
        if self._robot.arm_l is None or self._robot.arm_r is None:
            raise RobotDisconnected("tatbot: an arm is not connected (its driver would report the home pose) — check the arm")

    def _make_robot(self) -> Any:
        try:
            import pyrealsense2  # noqa: F401  (RealSense frames come through LeRobot's RealSenseCamera)
            from lerobot.cameras.realsense import RealSenseCameraConfig
            from lerobot.robots.tatbot.config_tatbot import TatbotConfig
            from lerobot.robots.tatbot.tatbot import Tatbot
        except ImportError as e:
            raise RuntimeError(f"{_INSTALL_HINT} ({e})") from e
        arms = self.scene.arms
        cams = {
            cam["name"]: RealSenseCameraConfig(
                fps=int(cam["fps"]), width=int(cam["width"]), height=int(cam["height"]),
                serial_number_or_name=str(cam["serial_number"]),
            )
            for cam in self.scene.realsenses
        } if self.enable_realsense else {}
        values = {
            "ip_address_l": arms.get("ip_address_l"),
            "ip_address_r": arms.get("ip_address_r"),
            "arm_l_config_filepath": arms.get("arm_l_config_filepath"),
            "arm_r_config_filepath": arms.get("arm_r_config_filepath"),
            "connection_timeout": arms.get("connection_timeout"),
            "goal_time": self.scene.goal_time_slow,
            "goal_time_fast": self.scene.goal_time_fast,
            "goal_time_slow": self.scene.goal_time_slow,
            # The driver parks the arms here on connect and disconnect.
            "home_pos_l": [float(v) for v in self.scene.sleep[:7]],
            "home_pos_r": [float(v) for v in self.scene.sleep[7:]],
            "rs_cameras": cams,
            "cameras": cams,
            "ip_cameras": {},
            "scan_cameras": {},
        }
        # tatbot's TatbotConfig fields changed between versions: pass only the ones this install has.
        known = {f.name for f in dataclasses.fields(TatbotConfig)}
        return Tatbot(TatbotConfig(**{k: v for k, v in values.items() if k in known and v is not None}))
