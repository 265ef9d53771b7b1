"""`vla_infer`: run a trained LeRobot policy on the tatbot (or its simulator) — the seed's MCP inference tool, done.

Inputs and outputs are exactly the seed's (`VLAInferInput` / `VLAInferOutput`). The loop: resolve the scene, load
the checkpoint with LeRobot, connect the robot, move to ready, then at `fps` observe -> policy -> safety envelope ->
send (optionally recording every step), and whatever happens return to ready and disconnect. Failures a user can act
on (a dropped arm, a black camera frame, a NaN action, a cancel) end the rollout with `success=False` and a message;
they are never raised through the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, Field

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.inference.policy import LoadedPolicy, load_policy, resolve_device
from tatbot_pipeline.robot.backends import RobotFactory, robot_factory
from tatbot_pipeline.robot.base import Robot, RobotError, check_frames, observation_frame
from tatbot_pipeline.robot.safety import SafetyEnvelope, UnsafeAction
from tatbot_pipeline.robot.scene import RobotScene, resolve_scene, scenes_dir
from tatbot_pipeline.robot.sim import SimRobot

log = logging.getLogger(__name__)

# (fraction done in [0, 1], what is happening)
ProgressFn = Callable[[float, str], None]


class VLAInferInput(BaseModel):
    """The seed's tool input. `policy` is smolvla or pi0, or any LeRobot type the checkpoint's config declares."""

    policy: str = Field(description="policy type: 'smolvla', 'pi0', or the type in the checkpoint's config.json")
    checkpoint_path: str = Field(description="a pretrained_model dir; relative paths are under the pipeline home")
    scene: str = Field("default", description="scene name: <scenes dir>/<scene>.yaml, else the built-in scene")
    device: Literal["cuda", "cpu"] = Field("cuda", description="falls back to cpu with a note when CUDA is absent")
    max_steps: int = Field(500, gt=0, description="safety cap on control steps")
    enable_realsense: bool = Field(False, description="use the scene's RealSense cameras (real robot)")
    fps: int = Field(10, gt=0, le=100, description="control rate in Hz")
    debug: bool = Field(False, description="log every step")
    record_eval: bool = Field(False, description="record the rollout as vla-eval-{scene}-{timestamp}")
    dry_run: bool = Field(False, description="load scene + policy, one forward pass, move nothing")
    task_prompt: str | None = Field(None, description="task text for the policy; default: the scene's task")


class VLAInferOutput(BaseModel):
    success: bool = True
    message: str = ""
    num_steps: int = 0
    eval_dir: str | None = None


@dataclass
class _Run:
    """What the loop learned, for the final message."""

    steps: int = 0
    clamped: int = 0
    rate_limited: int = 0
    stop_reason: str | None = None


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def robot_lock(key: str) -> threading.Lock:
    """One rollout per robot: `dagster job execute` runs in-process and bypasses run-queue limits, so the lock is here."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def resolve_checkpoint(path: str | Path, home: Path) -> Path:
    """A checkpoint path as given, or relative to the pipeline home (where training writes outputs/train/...)."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else Path(home) / p).resolve()


def vla_infer(
    request: VLAInferInput,
    settings: PipelineSettings,
    *,
    backend: str = "sim",
    factory: RobotFactory | None = None,
    eval_root: Path | None = None,
    stop: threading.Event | None = None,
    progress: ProgressFn | None = None,
) -> VLAInferOutput:
    """Run one rollout; never raises for robot, policy or input trouble — the output says what happened.

    `factory` overrides the backend's robot factory (tests inject faults this way); `stop` is set by a canceller
    and checked every step; `progress` receives (fraction, message) as the rollout goes.
    """
    lock = robot_lock(backend)
    if not lock.acquire(blocking=False):
        return VLAInferOutput(success=False, message=f"another rollout is already running on the {backend} robot — wait for it or cancel it")
    try:
        return _vla_infer(request, settings, factory or robot_factory(backend), eval_root, stop, progress or _no_progress)
    except Exception as e:  # noqa: BLE001 - the tool boundary: every failure becomes a message for the operator
        log.exception("vla_infer failed")
        return VLAInferOutput(success=False, message=f"{type(e).__name__}: {e}")
    finally:
        lock.release()


def _no_progress(fraction: float, message: str) -> None:
    log.info("%3.0f%% %s", 100 * fraction, message)


def _vla_infer(
    req: VLAInferInput,
    settings: PipelineSettings,
    factory: RobotFactory,
    eval_root: Path | None,
    stop: threading.Event | None,
    progress: ProgressFn,
) -> VLAInferOutput:
    notes: list[str] = []
    progress(0.0, f"loading scene {req.scene}")
    scene = resolve_scene(req.scene, scenes_dir(settings.home))
    device, note = resolve_device(req.device)
    if note:
        notes.append(note)
        progress(0.02, note)
    checkpoint = resolve_checkpoint(req.checkpoint_path, settings.home)
    progress(0.03, f"loading {req.policy} policy from {checkpoint}")
    policy = load_policy(checkpoint, req.policy, device)
    task = req.task_prompt or scene.task
    progress(0.05, "first forward pass")
    first_action = warm_up(policy, scene, task)
    if req.dry_run:
        return _dry_run(first_action, policy, scene, req, notes)
    if stop is not None and stop.is_set():
        return VLAInferOutput(success=False, message="; ".join([*notes, "cancelled by the client before the robot moved"]))

    progress(0.06, "connecting to the robot")
    robot = factory(scene, policy.cameras, req.enable_realsense)
    missing = sorted(set(policy.cameras) - set(robot.cameras))
    if missing:
        raise ValueError(
            f"the policy looks at cameras {missing} but the {robot.name} robot has {sorted(robot.cameras) or 'none'} — "
            "pass enable_realsense=true and check the scene's cams.realsenses"
        )
    run = _Run()
    recorder = (
        EvalRecorder(
            eval_root or settings.home / "eval_datasets", scene, policy.cameras, req.fps,
            info={"checkpoint_path": str(checkpoint), "policy": policy.type, "task": task, "device": device,
                  "robot": robot.name, "max_steps": req.max_steps},
        )
        if req.record_eval else None
    )
    try:
        robot.connect()
        progress(0.08, f"moving to ready (goal time {scene.goal_time_slow} s)")
        robot.send(scene.ready, scene.goal_time_slow, blocking=True)
        policy.reset()
        with recorder if recorder is not None else nullcontext():
            _loop(robot, policy, scene, task, req, run, recorder, stop, progress)
    except (RobotError, UnsafeAction) as e:
        run.stop_reason = str(e)
    finally:
        recovery = _return_to_ready(robot, scene)
    eval_dir = str(recorder.path) if recorder is not None else None

    summary = f"{run.steps} steps at {req.fps} Hz on {robot.name} ({policy.type} from {checkpoint})"
    envelope = f"{run.clamped} actions clamped to joint limits, {run.rate_limited} rate-limited"
    ending = "robot back at ready and disconnected" if recovery is None else f"WARNING: {recovery}"
    if run.stop_reason is None:
        message = f"rollout finished: {summary}; {envelope}; {ending}"
    else:
        message = f"rollout stopped at step {run.steps}: {run.stop_reason}; {summary}; {ending}"
    return VLAInferOutput(
        success=run.stop_reason is None and recovery is None,
        message="; ".join([*notes, message]),
        num_steps=run.steps,
        eval_dir=eval_dir,
    )


def _loop(
    robot: Robot,
    policy: LoadedPolicy,
    scene: RobotScene,
    task: str,
    req: VLAInferInput,
    run: _Run,
    recorder: EvalRecorder | None,
    stop: threading.Event | None,
    progress: ProgressFn,
) -> None:
    """observe -> policy -> envelope -> send, paced at req.fps on absolute deadlines (no drift)."""
    envelope = SafetyEnvelope.for_tatbot(req.fps)
    period = 1.0 / req.fps
    previous = scene.ready.copy()
    deadline = time.perf_counter()
    for step in range(req.max_steps):
        if stop is not None and stop.is_set():
            run.stop_reason = "cancelled by the client"
            return
        observation = robot.observe()
        check_frames(observation, policy.cameras)
        frame = observation_frame(observation, policy.cameras)
        safe = envelope.apply(policy.act(frame, task), previous)  # raises UnsafeAction before anything is sent
        robot.send(safe.joints, scene.goal_time_fast)
        previous = safe.joints
        run.clamped += safe.clamped
        run.rate_limited += safe.rate_limited
        if recorder is not None:
            recorder.add(frame, safe.joints, task)
        run.steps = step + 1
        if req.debug:
            log.info("step %d: sent %s", run.steps, np.round(safe.joints, 4).tolist())
        progress(0.1 + 0.9 * run.steps / req.max_steps, f"step {run.steps} of {req.max_steps}")
        deadline += period
        if not sleep_until(deadline):
            deadline = time.perf_counter()  # overran: restart the schedule instead of bursting to catch up


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


def _return_to_ready(robot: Robot, scene: RobotScene) -> str | None:
    """Back to ready and disconnect, whatever happened. Returns a problem to report, None when all went well."""
    problem = None
    try:
        if not robot.is_connected:
            robot.connect()  # an arm that dropped mid-run usually answers again; the arm must not stay where it was
        robot.send(scene.ready, scene.goal_time_slow, blocking=True)
    except Exception as e:  # noqa: BLE001 - reported in the tool's message; the disconnect below must still run
        problem = f"could not return to ready ({type(e).__name__}: {e}) — check the robot by hand"
        log.error(problem)
    try:
        robot.disconnect()
    except Exception as e:  # noqa: BLE001 - same: reported, never swallowed
        problem = (problem + "; " if problem else "") + f"disconnect failed ({type(e).__name__}: {e})"
        log.error(problem)
    return problem


def warm_up(policy: LoadedPolicy, scene: RobotScene, task: str) -> np.ndarray:
    """One forward pass on a simulated observation at the ready pose, then a reset: the first call is the slow one
    (allocations, lazy init), and it must not stall the first control step. Connects no robot, moves nothing."""
    with SimRobot(cameras=policy.cameras, start=scene.ready) as sim:
        frame = observation_frame(sim.observe(), policy.cameras)
    action = policy.act(frame, task)
    policy.reset()
    return action


def _dry_run(action: np.ndarray, policy: LoadedPolicy, scene: RobotScene, req: VLAInferInput, notes: list[str]) -> VLAInferOutput:
    """The warm-up pass is the dry run: report whether its action would pass the safety envelope unchanged."""
    try:
        safe = SafetyEnvelope.for_tatbot(req.fps).apply(action, scene.ready)
    except UnsafeAction as e:
        return VLAInferOutput(success=False, message="; ".join([*notes, f"dry run: {e}"]))
    verdict = "within the envelope" if not (safe.clamped or safe.rate_limited) else "would be clamped/rate-limited"
    message = (f"dry run OK: scene {scene.name}, {policy.type} policy from {policy.path} on {policy.device}, "
               f"cameras {sorted(policy.cameras) or 'none'}; first action {verdict}; nothing moved")
    return VLAInferOutput(success=True, message="; ".join([*notes, message]))
