"""`vla_infer`: run a trained LeRobot policy on the tatbot (or its simulator) — the seed's MCP inference tool.

Inputs are the seed's (`VLAInferInput`), checked strictly: an unknown field or a string where a boolean belongs is
refused, never guessed at. The rollout: take the robot's cross-process lock, resolve and validate the scene, load the
checkpoint with LeRobot, run one warm-up forward pass (a non-finite action refuses the run before anything
connects), pick the inference mode (modes.py: sync computes chunks on the control thread, async in a worker; the
default follows the measured chunk latency), check the node is armed when the backend moves real arms, connect, move
to ready, run the paced loop (loop.py or async_loop.py) and, whatever happens, park (back to ready, then disconnect)
before the eval dataset is finalized.
Failures a user can act on end the rollout with `success=False` and a message; they are never raised to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.digest import DigestMismatch, checkpoint_sha256, verify_checkpoint
from tatbot_pipeline.promotion import leaderboard_entry
from tatbot_pipeline.inference.async_loop import run_async_loop
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.inference.loop import (LoopPlan, LoopStats, ProgressFn, RolloutStopped, check_stop, run_loop,
                                            wait_until_at)
from tatbot_pipeline.policy.modes import ModeChoice, Requested, async_max_delay, default_mode, delay_steps
from tatbot_pipeline.policy.loading import LoadedPolicy, load_policy, resolve_device
from tatbot_pipeline.robot.arming import Arming, NotArmed, require_armed
from tatbot_pipeline.robot.backends import Backend, RobotFactory, robot_factory
from tatbot_pipeline.robot.backends import backend as robot_backend
from tatbot_pipeline.robot.base import Robot, RobotError
from tatbot_pipeline.robot.guard import GuardedRobot
from tatbot_pipeline.robot.lock import RobotBusy, RobotLock
from tatbot_pipeline.robot.safety import SafetyEnvelope, UnsafeAction
from tatbot_pipeline.robot.scene import RobotScene, SceneError, resolve_scene, shown
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.robot.state_dir import UnsafeStateDir

log = logging.getLogger(__name__)

MAX_PATH_LENGTH = 4096


# (checkpoint dir, policy type, device) -> the loaded policy: policy/loading.py's load_policy unless a caller injects one
PolicyLoader = Callable[[Path, str, str], LoadedPolicy]


class VLAInferInput(BaseModel):
    """The seed's tool input. `policy` is smolvla or pi0, or any LeRobot type the checkpoint's config declares.

    Strict: unknown fields are refused (`dryrun` is not `dry_run`), and nothing is coerced (`dry_run: "no"` is an
    error, not a rollout)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    policy: str = Field(description="policy type: 'smolvla', 'pi0', or the type in the checkpoint's config.json",
                        min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    checkpoint_path: str = Field(description="a pretrained_model dir; relative paths are under the pipeline home",
                                 min_length=1)
    scene: str = Field("default", description="scene name: <scenes dir>/<scene>.yaml; 'default' without a file is the "
                       "built-in scene; any other unknown name is an error")
    device: Literal["cuda", "cpu"] = Field("cuda", description="falls back to cpu with a note when CUDA is absent")
    max_steps: int = Field(500, gt=0, description="cap on control steps (the server has its own cap too)")
    enable_realsense: bool = Field(False, description="use the scene's RealSense cameras (real robot)")
    fps: int = Field(10, gt=0, le=100, description="control rate in Hz")
    debug: bool = Field(False, description="log every step")
    record_eval: bool = Field(False, description="record the rollout as vla-eval-{scene}-{timestamp}")
    dry_run: bool = Field(False, description="load scene + policy, one forward pass, move nothing")
    task_prompt: str | None = Field(None, description="task text for the policy; default: the scene's task",
                                    max_length=2000)
    checkpoint_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="the SHA-256 the checkpoint was evaluated with (trained_policy, "
        "promoted.json): a checkpoint whose files do not match is refused before anything is loaded; robot_eval "
        "always sends it")
    inference: Requested = Field(
        "auto", description="'sync': the control thread computes each chunk when the last one runs out (the step at "
        "every chunk seam waits for it); 'async': a worker computes the next chunk while the current one executes "
        "(LeRobot RTC inpainting for SmolVLA/pi0, replace-with-delay for others); 'auto': async when the checkpoint's "
        "p95 chunk latency (policy_evaluation's leaderboard on this device, else the warm-up) exceeds 25 % of the "
        "control period")

    @field_validator("checkpoint_path", "scene")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if len(value) > MAX_PATH_LENGTH:
            raise ValueError(f"is {len(value)} characters long; at most {MAX_PATH_LENGTH}")
        if any(ord(c) < 32 for c in value):
            raise ValueError(f"contains a control character (NUL, newline…): {shown(value)}")
        return value


class VLAInferOutput(BaseModel):
    success: bool = True
    message: str = ""
    num_steps: int = 0
    eval_dir: str | None = None  # only when the rollout recorded at least one frame
    stop_reason: str | None = None  # why the loop ended early (None: it ran to max_steps, or never started)
    actions_clamped: int = 0
    actions_rate_limited: int = 0
    max_tracking_error_rad: float | None = None  # previous command vs observed, revolute joints
    armed_by: str | None = None  # hardware rollouts: who armed the node, when, until when
    inference: str | None = None  # the mode the rollout ran in: sync or async
    missed_ticks: int = 0  # steps whose command went out a whole control period or more after their tick
    checkpoint_sha256: str | None = None  # the digest of the files this rollout loaded (digest.py)
    # Whether both arms reached the park pose (ready, then home) at the end; None when the robot never connected.
    # False: the message names each arm that did not, and why.
    parked: bool | None = None


class RolloutRefused(RuntimeError):
    """A rollout refused before anything moved (not armed); the message says how to proceed."""


def input_error(error: ValidationError) -> str:
    """A pydantic error as one line per field, with no echo of the (possibly huge) value."""
    problems = []
    for e in error.errors():
        field = ".".join(str(p) for p in e["loc"]) or "input"
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown field {shown(field, 40)} (fields: {', '.join(VLAInferInput.model_fields)})")
        else:
            problems.append(f"{field}: {e['msg']}")
    return "invalid vla_infer input — " + "; ".join(problems)


def checkpoint_location(path: str | Path, home: Path) -> Path:
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
    control: RolloutControl | None = None,
    progress: ProgressFn | None = None,
    loader: PolicyLoader | None = None,
) -> VLAInferOutput:
    """Run one rollout; never raises for robot, policy or input trouble — the output says what happened.

    `factory` overrides the backend's robot factory and `loader` the policy loader (tests inject robot and inference
    faults this way, through the same seams the real parts use); `control` lets a supervisor stop
    the rollout (checked every step) or abandon it; `progress` receives (fraction, message) as the rollout goes.
    """
    control = control or RolloutControl()
    try:
        chosen = robot_backend(backend)
        lock = RobotLock(settings.robot_state_dir, backend, owner=f"{request.policy} rollout of {request.checkpoint_path[:200]}")
        lock.acquire()
    except (RobotBusy, UnsafeStateDir, ValueError) as e:
        control.done.set()
        return VLAInferOutput(success=False, message=str(e))
    control.attach(lock=lock)
    rollout = _Rollout(request, settings, chosen, factory or robot_factory(backend, settings),
                       eval_root or settings.eval_datasets_dir,
                       control, progress or _log_progress, loader or load_policy)
    try:
        return rollout.run()
    except (RolloutRefused, SceneError) as e:  # refusals a user acts on: the message is the whole story
        return VLAInferOutput(success=False, message=rollout.message(str(e)))
    except Exception as e:  # noqa: BLE001 - the tool boundary: every failure becomes a message for the operator
        log.exception("vla_infer failed")
        return VLAInferOutput(success=False, message=rollout.message(f"{type(e).__name__}: {e}"))
    finally:
        lock.release()
        control.done.set()


def _log_progress(fraction: float, message: str) -> None:
    log.info("%3.0f%% %s", 100 * fraction, message)


@dataclass
class _Rollout:
    """One rollout's steps, in order; each a small method so the sequence reads top to bottom in `run`."""

    req: VLAInferInput
    settings: PipelineSettings
    backend: Backend
    factory: RobotFactory
    eval_root: Path
    control: RolloutControl
    progress: ProgressFn
    loader: "PolicyLoader"

    def __post_init__(self) -> None:
        self.notes: list[str] = []
        self.armed: Arming | None = None
        self.connected = False  # whether the robot ever connected (so whether anything of ours moved)
        self.mode = ModeChoice("sync", 0.0, "the warm-up")  # until the warm-up measured the chunk latency
        self.sha256: str | None = None  # the digest of the checkpoint's files, once checked

    def message(self, text: str) -> str:
        return "; ".join([*self.notes, text])

    def run(self) -> VLAInferOutput:
        self.clip_steps()
        req = self.req
        if self.backend.moves_hardware and not req.dry_run:
            self.require_armed()  # before loading anything: a refused rollout says so in a second
        scene, policy, task = self.load()
        warm = warm_up(policy, scene, task)
        if not np.isfinite(warm.actions).all():
            return VLAInferOutput(success=False, message=self.message(
                "the policy produced a non-finite action on its warm-up pass — refused before connecting to the robot"))
        self.mode = self.choose_mode(policy, warm)
        if req.dry_run:
            return VLAInferOutput(success=True, message=self.message(_dry_run(warm.actions[0], policy, scene, req)
                                                                     + f"; would run {self.mode.describe()}"),
                                  inference=self.mode.mode, checkpoint_sha256=self.sha256)
        if self.control.stop_requested:
            return VLAInferOutput(success=False, message=self.message(
                f"{self.control.reason or 'stopped'} before the robot moved"), stop_reason=self.control.reason)
        if self.backend.moves_hardware:
            self.require_armed()
        return self.drive(scene, policy, task, warm)

    def clip_steps(self) -> None:
        """A max_steps above the node's cap runs the cap's steps: said in the first progress message and the result,
        so nobody reads "step 1 of 1000000000" and learns of the cap only when it stops the run."""
        cap = self.settings.rollout_limits.max_steps
        if self.req.max_steps > cap:
            note = (f"max_steps {self.req.max_steps} is above this node's step cap: running {cap} steps "
                    "(TATBOT_ROLLOUT_MAX_STEPS on the node)")
            self.req = self.req.model_copy(update={"max_steps": cap})
            self.notes.append(note)
            self.progress(0.0, note)

    def choose_mode(self, policy: LoadedPolicy, warm: "WarmUp") -> ModeChoice:
        """The requested mode, else the one the measured chunk latency calls for (modes.py); warns when the
        measurement says the mode will miss ticks or run dry."""
        fps, requested = self.req.fps, self.req.inference
        chunked = policy.executes_chunks and policy.n_action_steps > 1
        if requested == "async" and not chunked:
            raise RolloutRefused(f"the {policy.type} policy computes a new chunk every step (n_action_steps "
                                 f"{policy.n_action_steps}, or temporal ensembling): nothing to compute ahead — "
                                 "use inference='sync'")
        entry = leaderboard_entry(self.settings, policy.path, self.sha256)
        if entry and entry.get("device") == policy.device and entry.get("chunk_latency_p95_ms") is not None:
            p95, measured_by = entry["chunk_latency_p95_ms"] / 1000, "policy_evaluation"
        else:
            p95, measured_by = warm.tracker.p95(), "the warm-up"
        if requested != "auto":
            choice = ModeChoice(requested, p95, measured_by, requested=True)
        else:
            choice = ModeChoice(default_mode(p95, fps) if chunked else "sync", p95, measured_by)
        if choice.mode == "sync" and p95 > 1 / fps:
            self.notes.append(f"WARNING: a chunk takes {p95 * 1000:.0f} ms (p95), more than the {1000 / fps:.0f} ms "
                              "control period: in sync mode every chunk seam misses a tick")
        if choice.mode == "async" and delay_steps(p95, fps) > async_max_delay(policy.n_action_steps):
            self.notes.append(f"WARNING: a chunk takes {p95 * 1000:.0f} ms (p95), more than async mode can hide with "
                              f"{policy.n_action_steps} actions per chunk at {fps} Hz: the rollout will likely stop "
                              "when the action queue runs dry")
        self.progress(0.055, f"running {choice.describe()}")
        return choice

    def require_armed(self) -> None:
        try:
            self.armed = require_armed(self.settings.robot_state_dir)
        except (NotArmed, UnsafeStateDir) as e:
            raise RolloutRefused(str(e)) from None

    def load(self) -> tuple[RobotScene, LoadedPolicy, str]:
        req = self.req
        self.progress(0.0, f"loading scene {req.scene}")
        scene = resolve_scene(req.scene, self.settings.scenes_dir)
        device, note = resolve_device(req.device)
        if note:
            self.notes.append(note)
            self.progress(0.02, note)
        checkpoint = checkpoint_location(req.checkpoint_path, self.settings.home)
        self.check_digest(checkpoint)
        self.progress(0.03, f"loading {req.policy} policy from {checkpoint}")
        policy = self.loader(checkpoint, req.policy, device)
        self.progress(0.05, "first forward pass")
        return scene, policy, req.task_prompt or scene.task

    def check_digest(self, checkpoint: Path) -> None:
        """The files about to be loaded are the ones that were evaluated (when the caller says which those were)."""
        if not checkpoint.is_dir():
            return  # load_policy says what is missing
        if self.req.checkpoint_sha256:
            self.progress(0.025, "checking the checkpoint's SHA-256")
            try:
                self.sha256 = verify_checkpoint(checkpoint, self.req.checkpoint_sha256, f"checkpoint {checkpoint.name}")
            except DigestMismatch as e:
                raise RolloutRefused(f"{e}; nothing was loaded and nothing moved") from None
        else:
            self.sha256 = checkpoint_sha256(checkpoint)

    def drive(self, scene: RobotScene, policy: LoadedPolicy, task: str, warm: "WarmUp") -> VLAInferOutput:
        """Connect, ready, loop; park whatever happens, then finalize the eval dataset."""
        req = self.req
        self.progress(0.06, "connecting to the robot")
        robot = GuardedRobot(self.factory(scene, policy.cameras, req.enable_realsense))
        self.control.attach(robot=robot)
        _check_cameras(policy, robot)
        recorder = self.recorder(scene, policy, task, robot) if req.record_eval else None
        stats = LoopStats()
        limits = self.settings.rollout_limits
        still_armed = self.still_armed if self.backend.moves_hardware else None
        recovery: str | None = "the rollout ended before parking"
        try:
            try:
                robot.connect()
                self.connected = True
                self.progress(0.08, f"moving to ready (goal time {scene.goal_time_slow} s)")
                robot.send(scene.ready, scene.goal_time_slow, blocking=True)
                waiting = time.perf_counter()  # a stop request, or arming withdrawn, also ends the wait
                wait_until_at(robot, scene.ready, "ready", limits,
                              lambda: check_stop(self.control, waiting, limits, still_armed))
                policy.reset()
                plan = LoopPlan(fps=req.fps, max_steps=req.max_steps, task=task, debug=req.debug)
                loop_args = (robot, policy, scene, plan, limits, stats, self.control, recorder, self.progress, still_armed)
                if self.mode.mode == "async":
                    if policy.supports_rtc:
                        policy.enable_rtc(execution_horizon=policy.n_action_steps)
                    run_async_loop(*loop_args, warm.tracker)
                else:
                    run_loop(*loop_args)
            except (RobotError, UnsafeAction, RolloutStopped) as e:
                stats.stop_reason = str(e)
            finally:
                # Never connected: nothing of ours moved, and a controller that did not answer will not answer now.
                recovery = park(robot, scene, self.report_parking) if self.connected else disconnect(robot)
        finally:
            if recorder is not None:
                recorder.close(**stats.as_meta(), limits=vars(limits), armed_by=self.armed and self.armed.describe(),
                               parked=recovery is None, inference=self.mode.mode,
                               inference_choice=self.mode.describe())
        return self.output(stats, recovery, robot, policy, recorder)

    def report_parking(self, line: str) -> None:
        self.progress(1.0, f"parking: {line}")

    def still_armed(self) -> None:
        """Every step: the arms were moving under an arming that has now ended, so the rollout stops and parks."""
        try:
            require_armed(self.settings.robot_state_dir)
        except NotArmed:
            raise RolloutStopped("arming expired or was withdrawn (`tatbot-pipeline arm --off`) while the arms were "
                                 "moving — stopped; arm the node again for the next rollout") from None
        except UnsafeStateDir as e:
            raise RolloutStopped(f"arming can no longer be trusted ({e})") from None

    def recorder(self, scene: RobotScene, policy: LoadedPolicy, task: str, robot: Robot) -> EvalRecorder:
        info = {"checkpoint_path": str(policy.path), "checkpoint_sha256": self.sha256, "policy": policy.type,
                "task": task, "device": policy.device,
                "robot": robot.name, "max_steps": self.req.max_steps, "n_action_steps": policy.n_action_steps}
        return EvalRecorder(self.eval_root, scene, policy.cameras, self.req.fps, info=info).open()

    def output(self, stats: LoopStats, recovery: str | None, robot: Robot, policy: LoadedPolicy,
               recorder: EvalRecorder | None) -> VLAInferOutput:
        req = self.req
        summary = (f"{stats.steps} steps at {req.fps} Hz on {robot.name} ({policy.type} from {policy.path}), "
                   f"{self.mode.describe()}, {stats.missed_ticks} missed ticks")
        tolerance = self.settings.rollout_limits.adjust_tolerance_rad
        envelope = (f"{stats.clamped} actions clamped to joint limits, {stats.rate_limited} rate-limited "
                    f"(by more than {tolerance:g} rad)")
        ending = "robot back at ready and disconnected" if recovery is None else f"WARNING: {recovery}"
        if not self.connected and recovery is None:
            ending = "the robot never connected, so nothing moved"
        if self.armed is not None:
            ending += f" ({self.armed.describe()})"
        if stats.stop_reason is None:
            text = f"rollout finished: {summary}; {envelope}; {ending}"
        else:
            text = f"rollout stopped at step {stats.steps}: {stats.stop_reason}; {summary}; {envelope}; {ending}"
        kept = recorder is not None and recorder.saved
        if recorder is not None and not kept:
            text += "; no frames were recorded, so no eval dataset was kept"
        return VLAInferOutput(
            success=stats.stop_reason is None and recovery is None,
            message=self.message(text),
            num_steps=stats.steps,
            eval_dir=str(recorder.path) if kept else None,
            stop_reason=stats.stop_reason,
            actions_clamped=stats.clamped,
            actions_rate_limited=stats.rate_limited,
            max_tracking_error_rad=round(stats.max_tracking_error_rad, 4) if stats.steps else None,
            armed_by=self.armed.describe() if self.armed else None,
            inference=self.mode.mode,
            missed_ticks=stats.missed_ticks,
            checkpoint_sha256=self.sha256,
            parked=(recovery is None) if self.connected else None,
        )


def _check_cameras(policy: LoadedPolicy, robot: Robot) -> None:
    missing = sorted(set(policy.cameras) - set(robot.cameras))
    if missing:
        raise ValueError(
            f"the policy looks at cameras {missing} but the {robot.name} robot has {sorted(robot.cameras) or 'none'} — "
            "pass enable_realsense=true and check the scene's cams.realsenses"
        )


def park(robot: Robot, scene: RobotScene, report: Callable[[str], None] = lambda line: None) -> str | None:
    """Back to ready and disconnect (home), whatever happened, each arm on its own. Returns what to report, per arm
    that did not make it; None when all went well."""
    try:
        problems = [p for p in robot.return_to(scene.ready, scene.goal_time_slow, report).values() if p]
    except Exception as e:  # noqa: BLE001 - reported in the tool's message; the disconnect below must still run
        problems = [f"could not return to ready ({type(e).__name__}: {e})"]
    for problem in problems:
        log.error(problem)
    failed = disconnect(robot)
    problems += [failed] if failed else []
    return "; ".join(problems) + " — check the robot by hand" if problems else None


def disconnect(robot: Robot) -> str | None:
    """Disconnect (a backend parks its arms at home on the way); the problem to report, if any."""
    try:
        robot.disconnect()
    except Exception as e:  # noqa: BLE001 - reported in the tool's message, never swallowed
        log.error("disconnect failed: %s", e)
        return f"disconnect failed ({type(e).__name__}: {e})"
    return None


@dataclass(frozen=True)
class WarmUp:
    actions: np.ndarray  # (n_action_steps, 14): the first chunk, checked for non-finite values
    tracker: Any  # lerobot LatencyTracker holding the timed chunk latencies


WARM_UP_TIMED_CHUNKS = 3


def warm_up(policy: LoadedPolicy, scene: RobotScene, task: str) -> WarmUp:
    """Chunk inference on a simulated observation at the ready pose: once untimed (the first call is the slow one:
    allocations, lazy init; it must not stall the first control step), then timed a few times — the chunk latency the
    inference mode follows when policy_evaluation has not measured it on this device. Connects no robot, moves
    nothing; resets the policy after."""
    from lerobot.policies.rtc.latency_tracker import LatencyTracker

    from tatbot_pipeline.robot.base import observation_frame

    with SimRobot(cameras=policy.cameras, start=scene.ready) as sim:
        frame = observation_frame(sim.observe(), policy.cameras)
    first = policy.chunk(frame, task)
    tracker = LatencyTracker()
    if np.isfinite(first.actions).all():
        for _ in range(WARM_UP_TIMED_CHUNKS):
            started = time.perf_counter()
            policy.chunk(frame, task)
            tracker.add(time.perf_counter() - started)
    policy.reset()
    return WarmUp(first.actions, tracker)


def _dry_run(action: np.ndarray, policy: LoadedPolicy, scene: RobotScene, req: VLAInferInput) -> str:
    """The warm-up pass is the dry run: say whether its action would pass the safety envelope unchanged."""
    safe = SafetyEnvelope.for_tatbot(req.fps).apply(action, scene.ready)
    verdict = "within the envelope" if not (safe.clamped or safe.rate_limited) else "would be clamped/rate-limited"
    return (f"dry run OK: scene {scene.name}, {policy.type} policy from {policy.path} on {policy.device}, "
            f"cameras {sorted(policy.cameras) or 'none'}; first action {verdict}; nothing moved")

