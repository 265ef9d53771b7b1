"""The one small interface every robot backend implements: connect / observe / send / disconnect.

Observations and actions use the names of tatbot's LeRobot robot (`left.joint_0.pos` … and one key per camera),
so `lerobot.datasets.utils.build_dataset_frame` turns them into the recording features unchanged and the rollout
loop is the same for the simulator and the real arms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tatbot_pipeline.robot.spec import JOINT_NAMES, NUM_JOINTS

# joint name -> float, camera name -> (H, W, 3) uint8 frame
Observation = dict[str, Any]


class RobotError(RuntimeError):
    """A backend failure the rollout reports to the user (and then tries to recover from)."""


class RobotDisconnected(RobotError):
    """An arm stopped answering; tatbot's driver would otherwise keep reporting its home pose."""


class CameraFailure(RobotError):
    """A camera read failed; tatbot's driver would otherwise hand back a black frame."""


class ControllerError(RobotError):
    """An arm controller reports an error state (`get_error_information()`): it stopped driving its joints."""


class FirmwareMismatch(RobotError):
    """The arm controller's firmware and the `trossen_arm` driver differ in major.minor: the driver refuses it."""


class Collision(RobotError):
    """An arm's external effort went above the limit: it touched something it should not have."""


@runtime_checkable
class Robot(Protocol):
    """A two-arm tatbot. Backends subclass this explicitly to inherit the context manager."""

    name: str
    cameras: dict[str, tuple[int, int]]  # camera name -> (height, width)

    @property
    def is_connected(self) -> bool: ...

    def connect(self) -> None: ...

    def observe(self) -> Observation: ...

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        """Command 14 joint targets reached in `goal_time` seconds; returns what was sent."""
        ...

    def disconnect(self) -> None: ...

    def return_to(self, pose: np.ndarray, goal_time: float,
                  report: Callable[[str], None] = lambda line: None) -> dict[str, str | None]:
        """Bring every arm that still answers to `pose` (blocking), each on its own: a dead arm must not hold up a
        live one. Returns each arm's problem, None for an arm that got there; `report` hears each outcome as it
        happens. This default moves the robot as one: a robot that can lose one arm alone overrides it."""
        if not self.is_connected:
            self.connect()  # a link that dropped mid-run usually answers again; the arms must not stay where they were
        self.send(pose, goal_time, blocking=True)
        report("both arms back at ready")
        return {"both arms": None}

    def __enter__(self) -> "Robot":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def joints_of(observation: Observation) -> np.ndarray:
    """The 14 joint positions of an observation, in `JOINT_NAMES` order."""
    return np.array([observation[name] for name in JOINT_NAMES], dtype=np.float32)


def joints_to_dict(joints: np.ndarray) -> dict[str, float]:
    if len(joints) != NUM_JOINTS:
        raise ValueError(f"expected {NUM_JOINTS} joint values, got {len(joints)}")
    return {name: float(v) for name, v in zip(JOINT_NAMES, joints)}


def check_frames(observation: Observation, cameras: dict[str, tuple[int, int]]) -> None:
    """Raise CameraFailure for a missing or all-black frame: that is how a failed RealSense read shows up."""
    for cam, (h, w) in cameras.items():
        frame = observation.get(cam)
        if frame is None:
            raise CameraFailure(f"camera {cam}: no frame in the observation — check its cable and serial in scene.yaml")
        if frame.shape != (h, w, 3):
            raise CameraFailure(f"camera {cam}: frame shape {frame.shape}, expected {(h, w, 3)}")
        if not frame.any():
            raise CameraFailure(f"camera {cam}: black frame (Failed to read?) — check the camera, then rerun")


def observation_frame(observation: Observation, cameras: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Robot observation -> LeRobot frame keys (`observation.state`, `observation.images.<cam>`), as recordings store them."""
    frame: dict[str, np.ndarray] = {"observation.state": joints_of(observation)}
    for cam in cameras:
        frame[f"observation.images.{cam}"] = observation[cam]
    return frame
