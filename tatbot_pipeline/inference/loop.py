"""The paced control loop of a rollout, and the monitors that stop it.

Every step: check why we might have to stop (a stop request, the wall-clock cap, arming withdrawn), observe, check
the frames and how well the arms followed the last command, ask the policy, pass its action through the safety
envelope, and send. A policy the envelope keeps correcting, or arms that no longer follow their commands, end the
rollout with a reason instead of being clamped forever: the needle is over a person.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.inference.policy import LoadedPolicy
from tatbot_pipeline.robot.base import Robot, check_frames, observation_frame
from tatbot_pipeline.robot.safety import REVOLUTE, RolloutLimits, SafeAction, SafetyEnvelope
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.spec import JOINT_NAMES

log = logging.getLogger(__name__)

# (fraction done in [0, 1], what is happening)
ProgressFn = Callable[[float, str], None]


class RolloutStopped(RuntimeError):
    """A monitor or a stop request ended the rollout; the message is the reason the operator reads."""


@dataclass
class LoopStats:
    """What the loop did, for the output, the message and the eval dataset."""

    steps: int = 0
    # Steps where the envelope changed a revolute joint by more than the tolerance (a gripper a hair past its limit,
    # or 0.001 rad of rate limiting, is not worth an operator's attention):
    clamped: int = 0  # ... to keep it within its URDF limits
    rate_limited: int = 0  # ... to keep it under the speed limit
    adjusted_streak: int = 0
    longest_adjusted_streak: int = 0
    max_adjustment_rad: float = 0.0
    max_tracking_error_rad: float = 0.0
    stop_reason: str | None = None

    def as_meta(self) -> dict:
        return {"steps": self.steps, "actions_clamped": self.clamped, "actions_rate_limited": self.rate_limited,
                "longest_adjusted_streak": self.longest_adjusted_streak,
                "max_adjustment_rad": round(self.max_adjustment_rad, 4),
                "max_tracking_error_rad": round(self.max_tracking_error_rad, 4), "stop_reason": self.stop_reason}


@dataclass(frozen=True)
class LoopPlan:
    fps: int
    max_steps: int
    task: str
    debug: bool = False


def run_loop(robot: Robot, policy: LoadedPolicy, scene: RobotScene, plan: LoopPlan, limits: RolloutLimits,
             stats: LoopStats, control: RolloutControl, recorder: EvalRecorder | None, progress: ProgressFn,
             still_armed: Callable[[], None] | None = None) -> None:
    """observe -> policy -> envelope -> send, paced on absolute deadlines (no drift). Raises RolloutStopped."""
    envelope = SafetyEnvelope.for_tatbot(plan.fps)
    period = 1.0 / plan.fps
    steps = min(plan.max_steps, limits.max_steps)
    previous = scene.ready.copy()
    started = deadline = time.perf_counter()
    for step in range(steps):
        check_stop(control, started, limits, still_armed)
        observation = robot.observe()
        check_frames(observation, policy.cameras)
        frame = observation_frame(observation, policy.cameras)
        check_tracking(frame["observation.state"], previous, limits, stats)
        safe = envelope.apply(policy.act(frame, plan.task), previous)  # raises UnsafeAction before anything is sent
        count_adjustment(safe, limits, stats)
        robot.send(safe.joints, scene.goal_time_fast)
        previous = safe.joints
        if recorder is not None:
            recorder.add(frame, safe.joints, plan.task)
        stats.steps = step + 1
        if plan.debug:
            log.info("step %d: sent %s", stats.steps, np.round(safe.joints, 4).tolist())
        progress(0.1 + 0.9 * stats.steps / steps, f"step {stats.steps} of {plan.max_steps}")
        deadline += period
        if not sleep_until(deadline):
            deadline = time.perf_counter()  # overran: restart the schedule instead of bursting to catch up
    if plan.max_steps > limits.max_steps:
        raise RolloutStopped(f"reached the server's step cap ({limits.max_steps} steps; TATBOT_ROLLOUT_MAX_STEPS)")


def check_stop(control: RolloutControl, started: float, limits: RolloutLimits,
               still_armed: Callable[[], None] | None) -> None:
    if control.stop_requested:
        raise RolloutStopped(control.reason or "stop requested")
    if time.perf_counter() - started > limits.max_seconds:
        raise RolloutStopped(f"reached the server's wall-clock cap ({limits.max_seconds:g} s; TATBOT_ROLLOUT_MAX_SECONDS)")
    if still_armed is not None:
        still_armed()


def check_tracking(observed: np.ndarray, commanded: np.ndarray, limits: RolloutLimits, stats: LoopStats) -> None:
    """The arms must follow: a joint far from its last command is blocked, slipping or not driven at all."""
    error = np.abs(np.asarray(observed, dtype=np.float32) - commanded)
    error[~REVOLUTE] = 0.0
    worst = int(np.argmax(error))
    stats.max_tracking_error_rad = max(stats.max_tracking_error_rad, float(error[worst]))
    if error[worst] > limits.max_tracking_error_rad:
        raise RolloutStopped(
            f"{JOINT_NAMES[worst]} is {error[worst]:.3f} rad from its last command (limit {limits.max_tracking_error_rad:g} "
            "rad): the arm is not following — blocked, collided or not driven")


def count_adjustment(safe: SafeAction, limits: RolloutLimits, stats: LoopStats) -> None:
    """Count what the envelope changed; stop when it had to change the policy's action too many steps in a row."""
    tolerance = limits.adjust_tolerance_rad
    stats.clamped += safe.clamp_rad > tolerance
    stats.rate_limited += safe.rate_limit_rad > tolerance
    stats.max_adjustment_rad = max(stats.max_adjustment_rad, safe.adjustment_rad)
    stats.adjusted_streak = stats.adjusted_streak + 1 if safe.adjustment_rad > tolerance else 0
    stats.longest_adjusted_streak = max(stats.longest_adjusted_streak, stats.adjusted_streak)
    if stats.adjusted_streak >= limits.max_adjusted_steps:
        raise RolloutStopped(
            f"the safety envelope had to correct the policy's action {stats.adjusted_streak} steps in a row (by up to "
            f"{stats.max_adjustment_rad:.3f} rad; limit {limits.max_adjusted_steps} steps): the policy asks for moves "
            "the robot must not make")


def sleep_until(deadline: float, spin: float = 0.002) -> bool:
    """Sleep to a perf_counter deadline: OS sleep to within `spin` s, then spin. False when already late."""
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return False
    if remaining > spin:
        time.sleep(remaining - spin)
    while time.perf_counter() < deadline:
        pass
    return True
