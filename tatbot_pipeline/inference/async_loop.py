"""The control loop of an async rollout: the tick only pops, checks and sends; chunks are computed by a worker.

Each tick: the stop checks (stop request, caps, arming), pop the next action (a failed worker or an empty queue is a
stop with its reason), the safety envelope and its streak monitor, send. Then, with the command out, observe: the
frames and the tracking check (against the command sent one period ago, as in sync mode), the frame recorded with
the next action, and handed to the worker as the newest observation. The robot is touched from this thread only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tatbot_pipeline.inference.chunks import ChunkWorker
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.inference.loop import (
    LoopPlan,
    LoopStats,
    ProgressFn,
    Ticker,
    check_stop,
    check_tracking,
    count_adjustment,
    finish_step,
    run_loop,
)
from tatbot_pipeline.policy.loading import LoadedPolicy
from tatbot_pipeline.robot.base import Robot, check_frames, observation_frame
from tatbot_pipeline.robot.safety import RolloutLimits, SafetyEnvelope
from tatbot_pipeline.robot.scene import RobotScene

# While a worker computes in Python, the control thread waits up to the interpreter's switch interval (5 ms by
# default) for the GIL after its sleep ends; 0.5 ms keeps that wait well inside the send-jitter target.
SWITCH_INTERVAL_S = 0.0005


def run_async_loop(robot: Robot, policy: LoadedPolicy, scene: RobotScene, plan: LoopPlan, limits: RolloutLimits,
                   stats: LoopStats, control: RolloutControl, recorder: EvalRecorder | None, progress: ProgressFn,
                   still_armed: Callable[[], None] | None, tracker: Any) -> None:
    """Async mode of `run_loop`, same checks in the same order relative to each send. Raises RolloutStopped."""
    envelope = SafetyEnvelope.for_tatbot(plan.fps)
    steps = min(plan.max_steps, limits.max_steps)
    commanded = scene.ready.copy()  # the last command sent: ready, before the first step
    frame = observe_checked(robot, policy, commanded, limits, stats)
    with ChunkWorker(policy, plan.task, plan.fps, tracker) as worker, fast_thread_switching():
        worker.start(frame)
        ticker = Ticker(plan.fps)
        for step in range(steps):
            check_stop(control, ticker.started, limits, still_armed)
            action, source = worker.pop(step)
            safe = envelope.apply(action, commanded)  # raises UnsafeAction before anything is sent
            count_adjustment(safe, limits, stats)
            robot.send(safe.joints, scene.goal_time_fast)
            late = stats.sent(ticker)
            before, commanded = commanded, safe.joints
            finish_step(step, steps, frame, safe, source, late, plan, stats, recorder, progress)
            if step + 1 < steps:
                frame = observe_checked(robot, policy, before, limits, stats)
                worker.offer(frame)
            ticker.wait_next()


def run_in_mode(mode: str, tracker: Any, *loop_args: Any) -> None:
    """`run_loop(*loop_args)` in sync mode, `run_async_loop(*loop_args, tracker)` in async mode (`loop_args` as
    `run_loop` takes them, `still_armed` included). Raises RolloutStopped."""
    if mode == "async":
        run_async_loop(*loop_args, tracker)
    else:
        run_loop(*loop_args)


def observe_checked(robot: Robot, policy: LoadedPolicy, commanded: np.ndarray, limits: RolloutLimits,
                    stats: LoopStats) -> dict[str, np.ndarray]:
    """Observe, check the frames and that the arms follow `commanded`; the policy's input frame."""
    observation = robot.observe()
    check_frames(observation, policy.cameras)
    frame = observation_frame(observation, policy.cameras)
    check_tracking(frame["observation.state"], commanded, limits, stats)
    return frame


@contextmanager
def fast_thread_switching() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)
