"""The one check every joint command passes before it reaches an arm: policy steps, ready, return-to-ready, sleep.

The safety envelope (safety.py) shapes what a *policy* asks for; this guard refuses what must never be sent at all,
whoever sends it: a non-finite value, a target outside the URDF limits, a goal time that is not a positive finite
number, or any command from a rollout that was abandoned (its lock released after a hung driver call). Backends call
`check_command` for the moves they make themselves (the home pose on connect and disconnect); the rollout only ever
holds a `GuardedRobot`.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from tatbot_pipeline.robot.base import Observation, Robot, RobotError
from tatbot_pipeline.robot.spec import COMMAND_LIMIT_TOLERANCE as LIMIT_TOLERANCE
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, NUM_JOINTS

MAX_GOAL_TIME_S = 30.0  # a slower move than this is a typo (ms for s), not a choice


class UnsafeCommand(RobotError):
    """A command the guard refused: nothing was sent."""


def check_command(joints: np.ndarray, goal_time: float, what: str = "command") -> np.ndarray:
    """The 14 targets as float32 when they may be sent; raises UnsafeCommand naming the joint otherwise."""
    target = np.asarray(joints, dtype=np.float64).reshape(-1)
    if target.shape != (NUM_JOINTS,):
        raise UnsafeCommand(f"{what}: {target.size} joint values, the tatbot has {NUM_JOINTS}")
    bad = [i for i in range(NUM_JOINTS) if not math.isfinite(target[i])]
    if bad:
        raise UnsafeCommand(f"{what}: non-finite target " + ", ".join(f"{JOINT_NAMES[i]}={target[i]}" for i in bad))
    outside = np.flatnonzero((target < JOINT_LOWER - LIMIT_TOLERANCE) | (target > JOINT_UPPER + LIMIT_TOLERANCE))
    if outside.size:
        raise UnsafeCommand(f"{what}: outside the URDF limits " + ", ".join(
            f"{JOINT_NAMES[i]}={target[i]:.4f} not in [{JOINT_LOWER[i]:.4f}, {JOINT_UPPER[i]:.4f}]" for i in outside))
    check_goal_time(goal_time, what)
    return np.clip(target, JOINT_LOWER, JOINT_UPPER).astype(np.float32)


def check_goal_time(goal_time: float, what: str = "command") -> float:
    """A goal time the arm controller can honour: positive, finite and at most MAX_GOAL_TIME_S seconds."""
    try:
        value = float(goal_time)
    except (TypeError, ValueError):
        raise UnsafeCommand(f"{what}: goal time {goal_time!r} is not a number") from None
    if not (math.isfinite(value) and 0 < value <= MAX_GOAL_TIME_S):
        raise UnsafeCommand(f"{what}: goal time {goal_time!r} s must be in (0, {MAX_GOAL_TIME_S:g}]")
    return value


class GuardedRobot(Robot):
    """A robot whose every `send` passes `check_command`, and which can be revoked: once a rollout is abandoned
    (its driver call hung past the cancel timeout), nothing it still tries to send reaches the arms."""

    def __init__(self, robot: Robot) -> None:
        self.robot = robot
        self.name = robot.name
        self.cameras = robot.cameras
        self._revoked: str | None = None
        self._lock = threading.Lock()

    @property
    def is_connected(self) -> bool:
        return self.robot.is_connected

    def revoke(self, reason: str) -> None:
        with self._lock:
            self._revoked = reason

    def connect(self) -> None:
        self._check_revoked("connect")
        self.robot.connect()

    def observe(self) -> Observation:
        self._check_revoked("observe")
        return self.robot.observe()

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        target = check_command(joints, goal_time)
        self._check_revoked("send")
        return self.robot.send(target, goal_time, blocking=blocking)

    def return_to(self, pose: np.ndarray, goal_time: float, report=lambda line: None) -> dict[str, str | None]:
        target = check_command(pose, goal_time, "return to ready")
        self._check_revoked("return to ready")
        return self.robot.return_to(target, goal_time, report)

    def disconnect(self) -> None:
        self._check_revoked("disconnect")  # a backend may park on disconnect: that is a move too
        self.robot.disconnect()

    def _check_revoked(self, what: str) -> None:
        with self._lock:
            if self._revoked:
                raise UnsafeCommand(f"{what} refused: this rollout was abandoned ({self._revoked})")
