"""Where the tatbot backend's camera frames come from: the scene's RealSense cameras, or the project's renderer.

`TATBOT_CAMERA_SOURCE=realsense` (the default) reads the cameras listed under the scene's `cams.realsenses` through
lerobot's own `RealSenseCamera` (pyrealsense2, from the `hardware` extra). `TATBOT_CAMERA_SOURCE=sim` renders
the same cameras (same names, same shapes) with `robot/render.py: render_camera` from the arms' measured joints, as the sim
backend does, so a camera policy can roll out through the real arm driver (or trossen-arm-sim) with no camera
attached. The source never changes which cameras there are, only where their frames come from.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tatbot_pipeline.config import CAMERA_SOURCES
from tatbot_pipeline.robot.base import CameraFailure, RobotError
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.render import render_camera
from tatbot_pipeline.robot.spec import CAMERAS

REALSENSE_READ_TIMEOUT_MS = 500  # a RealSense delivers a frame every 33 ms at 30 fps; 500 ms is a stalled camera


@dataclass(frozen=True)
class CameraSpec:
    """One `cams.realsenses` entry of a scene (the serial stays here: it never goes into a message)."""

    name: str
    height: int
    width: int
    fps: int
    serial: str

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


def scene_cameras(scene: RobotScene) -> list[CameraSpec]:
    specs = []
    for i, cam in enumerate(scene.realsenses):
        try:
            specs.append(CameraSpec(name=str(cam["name"]), height=int(cam["height"]), width=int(cam["width"]),
                                    fps=int(cam.get("fps") or 30), serial=str(cam.get("serial_number") or "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"scene {scene.name}: cams.realsenses[{i}] needs name, width, height (and serial_number): {e}") from None
    return specs


class CameraSource(Protocol):
    cameras: dict[str, tuple[int, int]]  # name -> (height, width)

    def connect(self) -> None: ...

    def read(self, joints: np.ndarray) -> dict[str, np.ndarray]:
        """One frame per camera; `joints` are the 14 positions just measured (the renderer draws them)."""
        ...

    def disconnect(self) -> None: ...


class RenderedCameras:
    """Frames from `robot/render.py: render_camera`: what the sim backend and the synthetic recordings show."""

    def __init__(self, specs: list[CameraSpec]) -> None:
        self.cameras = {s.name: s.shape for s in specs}

    def connect(self) -> None:
        pass

    def read(self, joints: np.ndarray) -> dict[str, np.ndarray]:
        return {name: render_camera(joints, shape, i % len(CAMERAS)) for i, (name, shape) in enumerate(self.cameras.items())}

    def disconnect(self) -> None:
        pass


class RealSenseCameras:
    """The scene's RealSense cameras through lerobot's `RealSenseCamera`; a failed read raises, never a black frame."""

    def __init__(self, specs: list[CameraSpec]) -> None:
        if specs and importlib.util.find_spec("pyrealsense2") is None:
            raise RobotError(
                "the scene lists RealSense cameras but pyrealsense2 is not installed on this node — install the "
                "hardware extra (`TATBOT_EXTRAS=hardware ./scripts/setup.sh`), or set TATBOT_CAMERA_SOURCE=sim to "
                "render the frames instead"
            )
        self.specs = specs
        self.cameras = {s.name: s.shape for s in specs}
        self._cams: dict[str, Any] = {}

    def connect(self) -> None:
        from lerobot.cameras.realsense import RealSenseCamera, RealSenseCameraConfig

        for s in self.specs:
            cam = RealSenseCamera(RealSenseCameraConfig(serial_number_or_name=s.serial, fps=s.fps, width=s.width, height=s.height))
            try:
                cam.connect()
            except Exception as e:  # noqa: BLE001 - lerobot raises ConnectionError/ValueError/RuntimeError here
                raise CameraFailure(f"camera {s.name}: could not connect ({type(e).__name__}) — check its USB cable "
                                    "and its serial_number in the scene's cams.realsenses") from e
            self._cams[s.name] = cam

    def read(self, joints: np.ndarray) -> dict[str, np.ndarray]:
        frames = {}
        for name, cam in self._cams.items():
            try:
                frames[name] = cam.async_read(timeout_ms=REALSENSE_READ_TIMEOUT_MS)
            except Exception as e:  # noqa: BLE001 - TimeoutError/RuntimeError from lerobot's read thread
                # lerobot's message names the camera by serial: keep it out of what reaches metadata.
                raise CameraFailure(f"camera {name}: read failed ({type(e).__name__}) — check the camera, then rerun") from e
        return frames

    def disconnect(self) -> None:
        cams, self._cams = self._cams, {}
        for cam in cams.values():
            if cam.is_connected:
                cam.disconnect()


def make_cameras(source: str, specs: list[CameraSpec]) -> CameraSource:
    if source == "sim":
        return RenderedCameras(specs)
    if source == "realsense":
        return RealSenseCameras(specs)
    raise ValueError(f"camera source {source!r} (TATBOT_CAMERA_SOURCE): choose one of {list(CAMERA_SOURCES)}")
