"""A simulated two-arm tatbot: joints follow commanded targets with a first-order lag, cameras are rendered.

The lag matches what the synthetic recordings assume (a Trossen arm covers ~60 % of the remaining distance per
0.1 s tick at goal_time_fast=0.2 s), and frames come from `robot/render.py: render_camera`, so a policy trained on synthetic
recordings sees the same kind of images here. Faults tatbot actually meets — an arm dropping off the network, a
camera read failing — can be injected at a given step to prove the rollout stops and recovers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tatbot_pipeline.robot.base import Observation, Robot, RobotDisconnected, joints_to_dict
from tatbot_pipeline.robot.spec import CAMERAS, JOINT_LOWER, JOINT_UPPER, NUM_JOINTS, SLEEP_POSE
from tatbot_pipeline.robot.render import render_camera


@dataclass(frozen=True)
class SimFaults:
    """Faults counted in observe() or send() calls (1-based)."""

    disconnect_at: int | None = None  # the link drops once at this observation; connect() brings it back
    camera_failure_at: int | None = None  # from this observation on, `failing_camera` returns black frames
    failing_camera: str = CAMERAS[0]
    pushed_joint: int | None = None  # this joint is pushed `push_rad` off its command (a collision) ...
    push_rad: float = 0.5
    pushed_from: int = 1  # ... from this observation on
    hang_at_command: int | None = None  # this send() never returns (a hung driver call) until `release_hang()`


class SimRobot(Robot):
    name = "tatbot-sim"

    def __init__(
        self,
        cameras: dict[str, tuple[int, int]] | None = None,
        faults: SimFaults | None = None,
        start: np.ndarray = SLEEP_POSE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`clock` (seconds) drives the joints' lag: the wall clock by default, a test's own clock to step it."""
        self.cameras = dict(cameras or {})
        self.faults = faults or SimFaults()
        self.position = np.asarray(start, dtype=np.float32).copy()
        self.target = self.position.copy()
        self.commands: list[np.ndarray] = []  # every target sent, for inspection after a run
        self.observations = 0
        self._tau = 0.1
        self._clock = clock
        self._last = clock()
        self._connected = False
        self._lock = threading.Lock()
        self._unhang = threading.Event()
        self.sends = 0

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True
        self._last = self._clock()

    def disconnect(self) -> None:
        self._connected = False

    def observe(self) -> Observation:
        self._require_connection()
        with self._lock:
            self.observations += 1
            n = self.observations
            if self.faults.disconnect_at == n:
                self._connected = False
                raise RobotDisconnected(f"{self.name}: left arm not connected (injected link drop at observation {n})")
            self._advance()
            position = self.position.copy()
        obs: Observation = joints_to_dict(position)
        for i, (cam, shape) in enumerate(self.cameras.items()):
            failing = self.faults.camera_failure_at is not None and n >= self.faults.camera_failure_at
            if failing and cam == self.faults.failing_camera:
                obs[cam] = np.zeros((*shape, 3), dtype=np.uint8)  # what tatbot's driver returns on a failed read
            else:
                obs[cam] = render_camera(position, shape, i % len(CAMERAS))
        return obs

    def release_hang(self) -> None:
        self._unhang.set()

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        self.sends += 1
        if self.faults.hang_at_command == self.sends:
            self._unhang.wait(timeout=120)  # bounded, so a test that forgets to release still ends
        self._require_connection()
        target = np.asarray(joints, dtype=np.float32).reshape(NUM_JOINTS)
        if not np.isfinite(target).all() or (target < JOINT_LOWER - 1e-5).any() or (target > JOINT_UPPER + 1e-5).any():
            # The real driver would fault the arm; the sim refuses loudly so a missing safety check shows up in tests.
            raise ValueError(f"{self.name}: target outside the URDF limits or non-finite: {target.tolist()}")
        with self._lock:
            self._advance()
            self.target = target.copy()
            self.commands.append(self.target)
            self._tau = max(goal_time, 1e-3) / 2  # ~63 % of the way after half the goal time
            if blocking:  # a blocking move returns once the arm is there; the sim does not make anyone wait
                # (and so starts from rest by construction: no interpolator here carries a policy step's velocity
                # into it, the defect robot/tatbot.py `_come_to_rest` guards the real driver against)
                self.position = self.target.copy()
        return target

    def _advance(self) -> None:
        now = self._clock()
        alpha = 1.0 - math.exp(-(now - self._last) / self._tau)
        moved = (self.position + alpha * (self.target - self.position)).astype(np.float32)
        j = self.faults.pushed_joint
        if j is not None and self.observations >= self.faults.pushed_from:
            moved[j] = self.target[j] + self.faults.push_rad
        self.position = moved
        self._last = now

    def _require_connection(self) -> None:
        if not self._connected:
            raise RobotDisconnected(f"{self.name}: not connected — call connect() first")
