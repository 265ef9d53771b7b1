"""The paced control loop of a rollout (sync mode), and the monitors that stop it in either mode.

Every step: check why we might have to stop (a stop request, the wall-clock cap, arming withdrawn), observe, check
the frames and how well the arms followed the last command, ask the policy, pass its action through the safety
envelope, and send. A policy the envelope keeps correcting, or arms that no longer follow their commands, end the
rollout with a reason instead of being clamped forever: the needle is over a person.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.policy.loading import ChunkSource, LoadedPolicy
from tatbot_pipeline.robot.base import Robot, check_frames, joints_of, observation_frame
from tatbot_pipeline.robot.safety import REVOLUTE, RolloutLimits, SafeAction, SafetyEnvelope
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.spec import JOINT_NAMES

log = logging.getLogger(__name__)

START_POLL_S = 0.02

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
    missed_ticks: int = 0  # steps sent a whole period or more after their tick
    send_late_s: list[float] = field(default_factory=list, repr=False)  # per step: tick -> command sent

    def sent(self, ticker: "Ticker") -> float:
        """Note that this step's command was just sent; returns how late, in seconds."""
        late = time.perf_counter() - ticker.due
        self.send_late_s.append(late)
        self.missed_ticks += late >= ticker.period
        return late

    def as_meta(self) -> dict:
        late_ms = np.asarray(self.send_late_s) * 1000
        return {"steps": self.steps, "actions_clamped": self.clamped, "actions_rate_limited": self.rate_limited,
                "longest_adjusted_streak": self.longest_adjusted_streak,
                "max_adjustment_rad": round(self.max_adjustment_rad, 4),
                "max_tracking_error_rad": round(self.max_tracking_error_rad, 4), "stop_reason": self.stop_reason,
                "missed_ticks": self.missed_ticks,
                "send_late_p50_ms": round(float(np.percentile(late_ms, 50)), 2) if late_ms.size else None,
                "send_late_p99_ms": round(float(np.percentile(late_ms, 99)), 2) if late_ms.size else None}


@dataclass(frozen=True)
class LoopPlan:
    fps: int
    max_steps: int
    task: str
    debug: bool = False


def run_loop(robot: Robot, policy: LoadedPolicy, scene: RobotScene, plan: LoopPlan, limits: RolloutLimits,
             stats: LoopStats, control: RolloutControl, recorder: EvalRecorder | None, progress: ProgressFn,
             still_armed: Callable[[], None] | None = None) -> None:
    """Sync mode: observe -> policy -> envelope -> send, paced on absolute deadlines. Raises RolloutStopped.

    The policy computes a new chunk inline when its queue runs out, so the step at a chunk seam is sent late by the
    chunk's latency (async_loop.py moves that off this thread)."""
    envelope = SafetyEnvelope.for_tatbot(plan.fps)
    steps = min(plan.max_steps, limits.max_steps)  # the rollout clipped max_steps up front and said so
    previous = scene.ready.copy()
    chunk_every = policy.n_action_steps if policy.executes_chunks else 1
    source: ChunkSource | None = None
    ticker = Ticker(plan.fps)
    for step in range(steps):
        check_stop(control, ticker.started, limits, still_armed)
        observation = robot.observe()
        check_frames(observation, policy.cameras)
        frame = observation_frame(observation, policy.cameras)
        check_tracking(frame["observation.state"], previous, limits, stats)
        asked = time.perf_counter()
        action = policy.act(frame, plan.task)
        if step % chunk_every == 0:  # select_action computed a chunk in this call (its queue starts empty)
            source = ChunkSource(step // chunk_every, time.perf_counter() - asked, rtc_merged=False)
        safe = envelope.apply(action, previous)  # raises UnsafeAction before anything is sent
        count_adjustment(safe, limits, stats)
        robot.send(safe.joints, scene.goal_time_fast)
        late = stats.sent(ticker)
        previous = safe.joints
        finish_step(step, steps, frame, safe, source, late, plan, stats, recorder, progress)
        ticker.wait_next()


def finish_step(step: int, steps: int, frame: dict[str, np.ndarray], safe: SafeAction, source: ChunkSource | None,
                late: float, plan: LoopPlan, stats: LoopStats, recorder: EvalRecorder | None,
                progress: ProgressFn) -> None:
    """After a send: record the step, count it, report progress."""
    if recorder is not None:
        recorder.add(frame, safe.joints, plan.task, source, late)
    stats.steps = step + 1
    if plan.debug:
        log.info("step %d: sent %s", stats.steps, np.round(safe.joints, 4).tolist())
    progress(0.1 + 0.9 * stats.steps / steps, f"step {stats.steps} of {steps}")


class Ticker:
    """The loop's schedule: absolute deadlines one period apart (no drift). A step that overran restarts the schedule
    from now instead of bursting to catch up; `due` is when the current step should have been sent."""

    def __init__(self, fps: int) -> None:
        self.period = 1.0 / fps
        self.started = self.due = self._deadline = time.perf_counter()

    def wait_next(self) -> None:
        self._deadline += self.period
        self.due = self._deadline
        if not sleep_until(self._deadline):
            self._deadline = time.perf_counter()


def check_stop(control: RolloutControl, started: float, limits: RolloutLimits,
               still_armed: Callable[[], None] | None) -> None:
    if control.stop_requested:
        raise RolloutStopped(control.reason or "stop requested")
    if time.perf_counter() - started > limits.max_seconds:
        raise RolloutStopped(f"reached the server's wall-clock cap ({limits.max_seconds:g} s; TATBOT_ROLLOUT_MAX_SECONDS)")
    if still_armed is not None:
        still_armed()


def farthest_joint(observed: np.ndarray, target: np.ndarray) -> tuple[int, float]:
    """The revolute joint farthest from `target`, and how far (rad); the grippers are not positions to reach."""
    error = np.abs(np.asarray(observed, dtype=np.float32) - target)
    error[~REVOLUTE] = 0.0
    worst = int(np.argmax(error))
    return worst, float(error[worst])


def wait_until_at(robot: Robot, target: np.ndarray, what: str, limits: RolloutLimits,
                  check: Callable[[], None] = lambda: None) -> None:
    """Wait until the arms are at `target` (a blocking move has returned) before the loop starts from it.

    A blocking move returns after its goal time; an arm that lags (a simulator short of CPU) or is held (a real arm
    blocked on its way) is not there yet, and a loop started from mid-move would take the gap for an arm that does
    not follow. `check` runs every poll (a stop request, arming). Raises RolloutStopped when the arms do not arrive."""
    deadline = time.monotonic() + limits.start_timeout_s
    while True:
        check()
        worst, error = farthest_joint(joints_of(robot.observe()), target)
        if error <= limits.start_tolerance_rad:
            return
        if time.monotonic() > deadline:
            raise RolloutStopped(
                f"the arms did not reach {what} within {limits.start_timeout_s:g} s of the move's goal time "
                f"({JOINT_NAMES[worst]} still {error:.3f} rad away; TATBOT_ROLLOUT_START_TIMEOUT_S) — "
                "blocked, or a simulator short of CPU")
        time.sleep(START_POLL_S)


def check_tracking(observed: np.ndarray, commanded: np.ndarray, limits: RolloutLimits, stats: LoopStats) -> None:
    """The arms must follow: a joint far from its last command is blocked, slipping or not driven at all."""
    worst, error = farthest_joint(observed, commanded)
    stats.max_tracking_error_rad = max(stats.max_tracking_error_rad, error)
    if error > limits.max_tracking_error_rad:
        raise RolloutStopped(
            f"{JOINT_NAMES[worst]} is {error:.3f} rad from its last command (limit {limits.max_tracking_error_rad:g} "
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
