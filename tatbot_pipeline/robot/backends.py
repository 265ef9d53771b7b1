"""Robot backends by name: the rollout asks for one, tests and the server can register their own factory."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.robot.base import Robot
from tatbot_pipeline.robot.scene import RobotScene

# (scene, cameras the policy needs as name -> (h, w), enable_realsense) -> Robot
RobotFactory = Callable[[RobotScene, dict[str, tuple[int, int]], bool], Robot]


def _sim(scene: RobotScene, cameras: dict[str, tuple[int, int]], enable_realsense: bool,
         settings: PipelineSettings | None = None) -> Robot:
    from tatbot_pipeline.robot.sim import SimRobot

    # Simulated cameras cost nothing: render whatever the policy looks at, whatever enable_realsense says.
    return SimRobot(cameras=cameras, start=scene.sleep)


def _tatbot(scene: RobotScene, cameras: dict[str, tuple[int, int]], enable_realsense: bool,
            settings: PipelineSettings | None = None) -> Robot:
    from tatbot_pipeline.robot.tatbot import TatbotRobot

    # The scene's cameras, not the policy's: the rollout refuses a policy looking at a camera the robot lacks.
    settings = settings or PipelineSettings.from_env()
    return TatbotRobot(scene, enable_realsense=enable_realsense, camera_source=settings.camera_source,
                       limits=settings.rollout_limits)


@dataclass(frozen=True)
class Backend:
    # Called as factory(scene, cameras, enable_realsense, settings=None); without settings, the environment's.
    factory: RobotFactory
    moves_hardware: bool  # real arms: a rollout needs the node armed by an operator at the robot (robot/arming.py)


BACKENDS: dict[str, Backend] = {"sim": Backend(_sim, moves_hardware=False), "tatbot": Backend(_tatbot, moves_hardware=True)}


def backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown robot backend {name!r}; choose one of {sorted(BACKENDS)}") from None


def robot_factory(name: str, settings: PipelineSettings | None = None) -> RobotFactory:
    """The backend's factory; with `settings`, bound to them (TATBOT_CAMERA_SOURCE is one of them)."""
    factory = backend(name).factory
    return functools.partial(factory, settings=settings) if settings is not None else factory
