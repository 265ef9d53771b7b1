"""Robot backends by name: the rollout asks for one, tests and the server can register their own factory."""

from __future__ import annotations

from typing import Callable

from tatbot_pipeline.robot.base import Robot
from tatbot_pipeline.robot.scene import RobotScene

# (scene, cameras the policy needs as name -> (h, w), enable_realsense) -> Robot
RobotFactory = Callable[[RobotScene, dict[str, tuple[int, int]], bool], Robot]


def _sim(scene: RobotScene, cameras: dict[str, tuple[int, int]], enable_realsense: bool) -> Robot:
    from tatbot_pipeline.robot.sim import SimRobot

    # Simulated cameras cost nothing: render whatever the policy looks at, whatever enable_realsense says.
    return SimRobot(cameras=cameras, start=scene.sleep)


def _tatbot(scene: RobotScene, cameras: dict[str, tuple[int, int]], enable_realsense: bool) -> Robot:
    from tatbot_pipeline.robot.tatbot import TatbotRobot

    return TatbotRobot(scene, enable_realsense=enable_realsense)


BACKENDS: dict[str, RobotFactory] = {"sim": _sim, "tatbot": _tatbot}


def robot_factory(backend: str) -> RobotFactory:
    try:
        return BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown robot backend {backend!r}; choose one of {sorted(BACKENDS)}") from None
