"""Safety envelope applied to every policy action before it reaches an arm, and the limits of one rollout.

A policy's output is only a suggestion: it is clamped to the URDF joint limits, its change per step is bounded
(a needle on skin must not jump), and a non-finite value stops the rollout instead of being sent. A policy the
envelope has to correct step after step is not being followed any more, so `RolloutLimits` stops it instead of
clamping forever, and bounds the rollout in time and steps whatever the caller asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, JOINTS_PER_ARM, NUM_JOINTS

# The six revolute joints of each arm (the gripper slide is in metres, its errors are not radians).
REVOLUTE = np.array([i % JOINTS_PER_ARM != JOINTS_PER_ARM - 1 for i in range(NUM_JOINTS)])

# Joint speed limits the envelope allows: rad/s for the six revolute joints, m/s for the gripper slide.
MAX_JOINT_SPEED = 1.5
MAX_GRIPPER_SPEED = 0.1


class UnsafeAction(RuntimeError):
    """The policy produced something that must not be sent (NaN/inf, wrong size)."""


@dataclass(frozen=True)
class SafeAction:
    joints: np.ndarray
    clamped: bool  # some joint was outside the URDF limits
    rate_limited: bool  # some joint wanted to move more than max_delta in one step
    adjustment_rad: float = 0.0  # largest change the envelope made to a revolute joint of the action
    clamp_rad: float = 0.0  # of which the URDF limits (largest, revolute joints)
    rate_limit_rad: float = 0.0  # of which the per-step bound (largest, revolute joints)


@dataclass(frozen=True)
class SafetyEnvelope:
    lower: np.ndarray
    upper: np.ndarray
    max_delta: np.ndarray  # per joint, per step

    @classmethod
    def for_tatbot(cls, fps: float, joint_speed: float = MAX_JOINT_SPEED, gripper_speed: float = MAX_GRIPPER_SPEED) -> "SafetyEnvelope":
        """URDF limits and a per-step bound derived from joint speed limits at the loop rate."""
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        arm = [joint_speed] * (JOINTS_PER_ARM - 1) + [gripper_speed]
        return cls(JOINT_LOWER.copy(), JOINT_UPPER.copy(), np.array(arm * 2, dtype=np.float32) / fps)

    def apply(self, action: np.ndarray, previous: np.ndarray) -> SafeAction:
        """The action to send, given the previous command. Raises UnsafeAction on NaN/inf or a wrong size."""
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (NUM_JOINTS,):
            raise UnsafeAction(f"policy action has {action.size} values, the tatbot has {NUM_JOINTS} joints")
        bad = ~np.isfinite(action)
        if bad.any():
            names = ", ".join(f"{JOINT_NAMES[i]}={action[i]}" for i in np.flatnonzero(bad))
            raise UnsafeAction(f"policy produced a non-finite action ({names})")
        clipped = np.clip(action, self.lower, self.upper)
        step = np.clip(clipped - previous, -self.max_delta, self.max_delta)
        safe = np.clip(previous + step, self.lower, self.upper).astype(np.float32)
        def largest(delta: np.ndarray) -> float:
            return float(np.abs(delta)[REVOLUTE].max())

        return SafeAction(safe, clamped=bool((clipped != action).any()), rate_limited=bool((step != clipped - previous).any()),
                          adjustment_rad=largest(safe - action), clamp_rad=largest(clipped - action),
                          rate_limit_rad=largest(clipped - previous - step))


@dataclass(frozen=True)
class RolloutLimits:
    """Server-side bounds on one rollout, whatever its caller asks for (env: TATBOT_ROLLOUT_<FIELD>, e.g.
    TATBOT_ROLLOUT_MAX_SECONDS=300). A rollout that reaches one stops, parks, and is reported as stopped."""

    max_seconds: float = 600.0  # wall-clock cap of the control loop
    max_steps: int = 6000  # step cap (10 min at 10 Hz), above any max_steps a caller sends
    max_adjusted_steps: int = 20  # consecutive steps whose action the envelope had to change by > adjust_tolerance_rad
    adjust_tolerance_rad: float = 0.02  # a smaller correction (a gripper a hair past its limit) does not count
    max_tracking_error_rad: float = 0.35  # previous command vs observed position, any revolute joint
    cancel_timeout_s: float = 10.0  # how long a stop (park included) may take before the rollout is abandoned
    client_timeout_s: float = 2.0  # a client that does not answer a ping within this is gone

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"rollout limit {f.name}={value!r} must be a positive number")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> "RolloutLimits":
        """From `field -> text` (the environment's form); unknown fields are an error, not ignored."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown rollout limits {unknown}; known: {sorted(known)}")
        parsed = {}
        for name, text in values.items():
            try:
                parsed[name] = int(text) if known[name] in (int, "int") else float(text)
            except ValueError:
                raise ValueError(f"rollout limit {name}={text!r} is not a number") from None
        return cls(**parsed)
