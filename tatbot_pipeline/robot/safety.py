"""Safety envelope applied to every policy action before it reaches an arm, and the limits of one rollout.

A policy's output is only a suggestion: it is clamped to the URDF joint limits, its change per step is bounded
(a needle on skin must not jump), and a non-finite value stops the rollout instead of being sent. A policy the
envelope has to correct step after step is not being followed any more, so `RolloutLimits` stops it instead of
clamping forever, and bounds the rollout in time and steps whatever the caller asked for. The limits' values are
settings (config.py: RolloutLimits, env TATBOT_ROLLOUT_<FIELD>); the rollout builds its envelope and checks from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tatbot_pipeline.config import RolloutLimits  # noqa: F401 - the limits this module enforces
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
