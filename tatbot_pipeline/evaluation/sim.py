"""Sim-in-the-loop evaluation: a checkpoint rolls out closed-loop on two simulated arm controllers, stroke by stroke.

For each held-out stroke (an episode of the val split), both arms go to the stroke's first recorded state, then the
policy runs for the stroke's length at the recording's fps through `vla_infer`'s own loop (inference/loop.py
`run_loop`: the safety envelope, the tracking and envelope monitors, the guard on every command) and the real
`tatbot` backend (robot/tatbot.py: the unmodified `trossen_arm` driver, its external-effort collision stop), talking
to trossen-arm-sim processes (robot/sim_controllers.py) instead of hog's controllers.

Cameras: the policy sees the held-out episode's **recorded** frames, step by step. Real recordings are RealSense
images of a person's skin; the renderer draws a stylised arm. A policy trained on the former fed the latter would
be judged on an input it never saw. The cost: the images do not react to what the simulated arm does, so a policy
that steers by what it sees is judged open-loop in vision and closed-loop in proprioception.

Measured per stroke: joint tracking against the recorded stroke (simulated vs recorded observed joints, revolute,
rad), the needle-tip deviation from the recorded path in mm (robot/kinematics.py, per arm), every contact the
simulator streamed (bodies, peak force), the stop reason, missed ticks and actions clamped. Each stroke's rollout
is kept as a LeRobot dataset (inference/eval_record.py) with one drawn-vs-planned plot; the sim gate
(evaluation/sim_gate.py) decides.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tatbot_pipeline.datasets.build import MANIFEST
from tatbot_pipeline.evaluation.offline import frame_to_observation
from tatbot_pipeline.evaluation.sim_gate import SimGateDecision, SimGateLimits, decide_sim, outside_needle
from tatbot_pipeline.evaluation.sim_plot import save_png, tip_paths
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import EvalRecorder
from tatbot_pipeline.inference.async_loop import run_in_mode
from tatbot_pipeline.inference.loop import LoopPlan, LoopStats, RolloutStopped, wait_until_at
from tatbot_pipeline.policy.modes import ModeChoice, Requested, default_mode
from tatbot_pipeline.policy.loading import IMAGE_PREFIX, STATE, LoadedPolicy, load_policy
from tatbot_pipeline.inference.rollout import warm_up
from tatbot_pipeline.scene_yaml import load_scene
from tatbot_pipeline.robot.base import Observation, Robot, RobotError, joints_of
from tatbot_pipeline.robot.guard import GuardedRobot
from tatbot_pipeline.robot.kinematics import ee_offsets_mm, needle_tip_mm
from tatbot_pipeline.config import RolloutLimits
from tatbot_pipeline.robot.safety import REVOLUTE, UnsafeAction
from tatbot_pipeline.robot.scene import RobotScene, builtin_scene, scene_from_dict
from tatbot_pipeline.robot.setpoints import LongMove, wrong_way
from tatbot_pipeline.robot.sim_controllers import ArmSim, ContactStream, SimControllerError, sim_controllers
from tatbot_pipeline.robot.spec import ARMS, arm_slice
from tatbot_pipeline.robot.tatbot import TatbotRobot

log = logging.getLogger(__name__)

DEFAULT_EPISODES = 8
SIM_CONNECTION_TIMEOUT_S = 2.0  # a simulated controller answers in ms; a dead one should not hold the evaluation
APPROACH_SPEED_RAD_S = 0.75  # the move to a stroke's start: about half the envelope's 1.5 rad/s
APPROACH_MIN_S = 0.5
Progress = Callable[[str], None]


@dataclass
class RecordedStroke:
    """One held-out episode as the sim evaluation replays it."""

    episode: int
    task: str
    states: np.ndarray  # (T, 14) observed joints, as recorded
    actions: np.ndarray  # (T, 14) sent actions, as recorded
    frames: list[dict[str, np.ndarray]] = field(repr=False)  # per step: observation.images.<cam> -> (H, W, 3) uint8

    @property
    def steps(self) -> int:
        return len(self.states)


def read_strokes(val_root: Path, max_episodes: int | None = DEFAULT_EPISODES) -> tuple[list[RecordedStroke], int]:
    """The first `max_episodes` episodes of a LeRobot dataset (the val split), and its fps."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    val_root = Path(val_root)
    if not (val_root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{val_root}: not a LeRobot dataset — materialize training_splits first")
    dataset = LeRobotDataset(f"local/{val_root.name}", root=val_root, video_backend="pyav")
    episodes = list(range(dataset.num_episodes))[: max_episodes or None]
    if not episodes:
        raise ValueError(f"{val_root}: the val split has no episodes — lower val_fraction or add recordings")
    strokes = []
    for ep in episodes:
        start = int(dataset.meta.episodes["dataset_from_index"][ep])
        end = int(dataset.meta.episodes["dataset_to_index"][ep])
        items = [dataset[i] for i in range(start, end)]
        observations = [frame_to_observation(item) for item in items]
        strokes.append(RecordedStroke(
            episode=ep, task=items[0]["task"],
            states=np.stack([o[STATE] for o in observations]),
            actions=np.stack([item["action"].numpy() for item in items]).astype(np.float32),
            frames=[{k: v for k, v in o.items() if k.startswith(IMAGE_PREFIX)} for o in observations]))
    return strokes, int(dataset.fps)


def recording_scene(val_root: Path) -> RobotScene:
    """The scene the strokes were recorded in: `scene.yaml` beside the dataset (a recording, as tatbot writes it),
    else that of the first recording the split (`../split.json`) names that is still readable, else the built-in
    scene (whose ee offsets are zero)."""
    val_root = Path(val_root)
    candidates = [val_root / "scene.yaml"]
    manifest = val_root.parent / MANIFEST
    if manifest.is_file():
        candidates += [Path(r["path"]) / "scene.yaml" for r in json.loads(manifest.read_text()).get("recordings", [])]
    for path in candidates:
        if path.is_file():
            data = load_scene(path)
            return scene_from_dict(str(data.get("name") or "recorded"), data, source=path)
    log.info("%s: no scene.yaml beside it or in its split's recordings; the built-in scene (no ee offsets)", val_root)
    return scene_from_dict("sim", builtin_scene("sim"))


def sim_scene(scene: RobotScene, controllers: dict[str, ArmSim]) -> RobotScene:
    """`scene` pointed at the simulated controllers: their addresses, no arm config files (the simulator ignores
    them, and the lab's files are on the robot node), no cameras (the recorded frames are fed instead)."""
    data = json.loads(json.dumps(scene.data, default=str))  # a deep copy of plain values
    arms = {k: v for k, v in (data.get("arms") or {}).items() if not k.endswith("_config_filepath")}
    arms.update({"ip_address_l": controllers["left"].host, "ip_address_r": controllers["right"].host,
                 "connection_timeout": SIM_CONNECTION_TIMEOUT_S})
    data.update(arms=arms, cams={"realsenses": []})
    return scene_from_dict(scene.name, data, source=scene.source)


class RecordedCameras(Robot):
    """A robot whose camera frames are a recorded episode's, one per `observe`; it keeps the joints it observed."""

    def __init__(self, robot: Robot, cameras: dict[str, tuple[int, int]]) -> None:
        self.robot = robot
        self.name = f"{robot.name} (simulated controllers, recorded frames)"
        self.cameras = dict(cameras)
        self.frames: list[dict[str, np.ndarray]] = []
        self.observed: list[np.ndarray] = []

    def play(self, frames: list[dict[str, np.ndarray]]) -> None:
        keys = [f"{IMAGE_PREFIX}{cam}" for cam in self.cameras]
        missing = sorted(key for key in keys if frames and key not in frames[0])
        if missing:
            raise ValueError(f"the policy looks at {missing}, which the val split did not record")
        self.frames, self.observed = frames, []

    @property
    def is_connected(self) -> bool:
        return self.robot.is_connected

    def connect(self) -> None:
        self.robot.connect()

    def observe(self) -> Observation:
        observation = self.robot.observe()
        frame = self.frames[min(len(self.observed), len(self.frames) - 1)] if self.frames else {}
        observation.update({cam: frame[f"{IMAGE_PREFIX}{cam}"] for cam in self.cameras if frame})
        self.observed.append(joints_of(observation))
        return observation

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        return self.robot.send(joints, goal_time, blocking=blocking)

    def disconnect(self) -> None:
        self.robot.disconnect()


@dataclass
class StrokeResult:
    episode: int
    steps: int  # control steps run
    planned_steps: int  # the recorded stroke's length
    stop_reason: str | None
    joint_error_p95_rad: float
    joint_error_max_rad: float
    tip_error_mm: dict[str, dict[str, float]]  # side -> {"p95": mm, "max": mm}
    tip_error_p95_mm: float  # worst arm
    tip_error_max_mm: float
    peak_contact_force_n: float  # any contact, needle included
    contacts: list[dict]  # side, body1 (the arm's), geom1, body2, geom2, peak_force_n, sim_time_s, duration_s
    missed_ticks: int
    actions_clamped: int
    actions_rate_limited: int
    dataset: str | None  # the rollout's LeRobot dataset
    plot: str | None  # the drawn-vs-planned PNG
    park_failure: str | None = None  # the last stroke's: why the arms did not reach home after it
    planned_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (T, 3)
    drawn_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps, 3)
    tip_deviation_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps,)
    joints: np.ndarray | None = field(repr=False, default=None)  # (steps, 14) the simulated arms' observed joints

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items()
               if k not in ("planned_tip_mm", "drawn_tip_mm", "tip_deviation_mm", "joints")}
        return _finite(out)

    def verdict(self, limits: SimGateLimits) -> str:
        """One line per stroke for a shell: what a tattoo artist asks first."""
        contacts = [c for c in self.contacts if outside_needle(c, limits)]
        touched = "".join(f"; touched {c['body2']} with {c['body1']} ({c['peak_force_n']:.1f} N"
                          f"{'' if c.get('phase', 'stroke') == 'stroke' else ', during the ' + c['phase']})"
                          for c in contacts)
        stopped = f"; STOPPED at step {self.steps}: {self.stop_reason}" if self.stop_reason else ""
        stopped += f"; NOT PARKED: {self.park_failure}" if self.park_failure else ""
        too_hard = [c for c in contacts if c["peak_force_n"] > limits.max_contact_force_n]  # the gate's own rule
        ok = (self.tip_error_p95_mm <= limits.tip_deviation_mm and not self.stop_reason and not too_hard
              and not self.park_failure)
        return (f"stroke {self.episode}: {'ok' if ok else 'FAIL'} — tip deviation p95 {self.tip_error_p95_mm:.2f} mm "
                f"(max {self.tip_error_max_mm:.2f}), joints p95 {self.joint_error_p95_rad:.3f} rad, "
                f"{self.steps}/{self.planned_steps} steps, {self.missed_ticks} missed ticks, "
                f"{self.actions_clamped} clamped{touched}{stopped}")


@dataclass
class SimEvaluation:
    checkpoint: str
    val_root: str
    fps: int
    limits: SimGateLimits
    records: list[StrokeResult]
    decision: SimGateDecision
    tip_error_mm_p95: float  # over every step of every stroke, both arms
    out_dir: str
    controllers: dict[str, str]  # side -> address (loopback)
    inference: str  # the mode the strokes ran in: sync or async
    ended_early: str | None = None  # why strokes were left out (a controller that never came back)
    # Each long move (approach, park) and arm, checked on the setpoints its controller received (robot/setpoints.py
    # `wrong_way`); empty when the controllers kept no setpoint log.
    long_moves: list[dict] = field(default_factory=list)

    @property
    def worst_wrong_way(self) -> dict | None:
        return max(self.long_moves, key=lambda m: m["worst_rad"], default=None)

    @property
    def passed(self) -> bool:
        return self.decision.passed

    @property
    def strokes(self) -> int:
        return len(self.records)

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons

    def to_json(self) -> dict:
        return _finite({
            "passed": self.passed, "strokes": self.strokes, "tip_error_mm_p95": self.tip_error_mm_p95,
            "reasons": self.reasons, "headline": self.decision.headline(), "checkpoint": self.checkpoint,
            "val_root": self.val_root, "fps": self.fps, "limits": asdict(self.limits),
            "criteria": [asdict(c) for c in self.decision.criteria], "ended_early": self.ended_early,
            "inference": self.inference, "long_moves": self.long_moves,
            "stroke_results": [r.to_json() for r in self.records], "out_dir": self.out_dir,
        })


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured (a stroke stopped before its first step) is null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def val_split_for(checkpoint: Path) -> Path:
    """The held-out side of the split a checkpoint was trained on: `val` beside the `train` dir its
    `train_config.json` names (lerobot-train's `dataset.root`)."""
    config = Path(checkpoint) / "train_config.json"
    try:
        train_root = Path(json.loads(config.read_text())["dataset"]["root"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FileNotFoundError(f"{config}: no dataset.root to find the checkpoint's val split — pass --val") from None
    val = train_root.parent / "val"
    if not val.is_dir():
        raise FileNotFoundError(f"{val}: the split the checkpoint was trained on has no val side — pass --val")
    return val


def evaluate_in_sim(
    checkpoint: Path, val_root: Path, out_dir: Path, episodes: int = DEFAULT_EPISODES,
    limits: SimGateLimits = SimGateLimits(), rollout_limits: RolloutLimits | None = None,
    scene: RobotScene | None = None, controllers: dict[str, ArmSim] | None = None,
    arm_scenes: dict[str, Path | None] | None = None, device: str = "cpu", inference: Requested = "auto",
    progress: Progress | None = None,
) -> SimEvaluation:
    """Roll `checkpoint` out on up to `episodes` held-out strokes of `val_root` in simulation and gate it.

    `controllers` reuses running simulated controllers (`{"left": ArmSim, "right": ArmSim}`); without them a pair is
    started under `out_dir/controllers` (with `arm_scenes` as their MJCF scenes) and stopped afterwards, whatever
    happens. `scene` defaults to the val split's scene.yaml (its ee offsets). Rollout datasets go to
    `out_dir/rollouts`, plots to `out_dir/plots`. `inference` is `vla_infer`'s: "auto" runs the mode the robot
    would run this checkpoint in (async when its warm-up chunk latency calls for it)."""
    import lerobot.policies  # noqa: F401  registers the policy configs
    from lerobot.configs.policies import PreTrainedConfig

    checkpoint, val_root, out_dir = Path(checkpoint), Path(val_root), Path(out_dir)
    say = progress or (lambda message: log.info("%s", message))
    strokes, fps = read_strokes(val_root, episodes)
    policy = load_policy(checkpoint, PreTrainedConfig.from_pretrained(checkpoint).type, device)
    base = scene or recording_scene(val_root)
    mode, tracker = choose_mode(policy, base, strokes[0].task, fps, inference)
    say(f"running {mode.describe()}")
    with ExitStack() as stack:
        if controllers is None:
            say("starting two simulated arm controllers")
            controllers = stack.enter_context(sim_controllers(out_dir / "controllers", scenes=arm_scenes,
                                                              log_setpoints=True))
        session = _SimSession(policy, sim_scene(base, controllers), controllers, fps, out_dir, limits,
                              rollout_limits or RolloutLimits(), say, mode, tracker)
        records, ended_early = session.run(strokes)
    # After the controllers stopped (their logs are complete then; reused ones log what they have flushed so far).
    long_moves = wrong_way(session.long_moves(), {side: sim.setpoint_log for side, sim in controllers.items()
                                                  if sim.log_setpoints})
    deviations = [d for r in records for d in r.tip_deviation_mm.values() if len(d)]
    p95 = float(np.percentile(np.concatenate(deviations), 95)) if deviations else float("nan")
    decision = decide_sim(records, p95, limits)
    if ended_early:
        decision = replace(decision, passed=False, reasons=[*decision.reasons, ended_early])
    result = SimEvaluation(str(checkpoint), str(val_root), fps, limits, records, decision, p95, str(out_dir),
                           {side: sim.host for side, sim in controllers.items()}, mode.mode, ended_early, long_moves)
    (out_dir / "sim_evaluation.json").write_text(json.dumps(result.to_json(), indent=2))
    if (worst := result.worst_wrong_way) is not None:
        say(f"{len(long_moves)} long moves (approach, park) checked on the setpoints the controllers received: at most "
            f"{worst['worst_rad']:.4f} rad away from the goal ({worst['worst']}, {worst['what']})")
    say(decision.headline())
    return result


def choose_mode(policy: LoadedPolicy, scene: RobotScene, task: str, fps: int,
                requested: Requested) -> tuple[ModeChoice, Any]:
    """The inference mode `vla_infer` would run the checkpoint in, from its warm-up (rollout.py `warm_up`: the same
    chunk latency measurement), and the latency tracker the async loop continues."""
    warm = warm_up(policy, scene, task)
    chunked = policy.executes_chunks and policy.n_action_steps > 1
    p95 = warm.tracker.p95()
    if requested != "auto":
        if requested == "async" and not chunked:
            raise ValueError(f"the {policy.type} policy computes a new chunk every step: nothing to compute ahead — "
                             "use inference='sync'")
        return ModeChoice(requested, p95, "the warm-up", requested=True), warm.tracker
    return ModeChoice(default_mode(p95, fps) if chunked else "sync", p95, "the warm-up"), warm.tracker


@dataclass
class _SimSession:
    """One connection to the simulated pair for all strokes of an evaluation."""

    policy: LoadedPolicy
    scene: RobotScene
    controllers: dict[str, ArmSim]
    fps: int
    out_dir: Path
    limits: SimGateLimits
    rollout_limits: RolloutLimits
    say: Progress
    mode: ModeChoice
    tracker: Any  # lerobot LatencyTracker (async mode schedules chunks by it)

    def run(self, strokes: list[RecordedStroke]) -> tuple[list[StrokeResult], str | None]:
        """Every stroke, in order; the robot disconnected (parked at home) whatever happens."""
        self.cameras = RecordedCameras(TatbotRobot(self.scene, enable_realsense=False, limits=self.rollout_limits),
                                       self.policy.cameras)
        self.robot = GuardedRobot(self.cameras)
        self.offsets = ee_offsets_mm(self.scene.data)
        records: list[StrokeResult] = []
        ended_early = None
        self.phases: list[tuple[int, str]] = []  # (index of the first long move, what the arms were doing)
        if self.mode.mode == "async" and self.policy.supports_rtc:
            self.policy.enable_rtc(execution_horizon=self.policy.n_action_steps)  # as vla_infer does
        try:
            self.robot.connect()
            for n, stroke in enumerate(strokes):
                if not self.robot.is_connected:
                    try:
                        self.robot.connect()  # an arm that dropped may answer again; a dead controller will not
                    except RobotError as e:
                        ended_early = (f"simulation ended after stroke {records[-1].episode if records else '-'}: "
                                       f"{e} — {len(strokes) - n} strokes not evaluated")
                        break
                records.append(self.stroke(stroke))
                self.say(records[-1].verdict(self.limits))
        except RobotError as e:
            ended_early = f"simulated robot failed before stroke {len(records)}: {e}"
        finally:
            self.park(records[-1] if records else None)
        return records, ended_early

    def park(self, last: StrokeResult | None) -> None:
        """Home at the end, as on the robot: a park that fails, or touches something, counts against the last
        stroke (and so the gate), not only in a log."""
        self.phases.append((len(self.cameras.robot.long_moves), "park"))
        streams: dict[str, ContactStream] = {}
        if last is not None:
            try:
                streams = self.open_streams()
            except SimControllerError as e:  # a controller that died: the park below says so for its arm
                log.warning("no contact stream for the park: %s", e)
        phases = [(time.monotonic(), "park")]
        try:
            self.robot.disconnect()
        except RobotError as e:
            log.warning("simulated arms: %s", e)
            if last is not None:
                last.park_failure = str(e)
        finally:
            if last is not None:
                last.contacts += [c for side, stream in streams.items()
                                  for c in contact_records(stream.close(), side, phases)]
                last.peak_contact_force_n = max((c["peak_force_n"] for c in last.contacts), default=0.0)

    def open_streams(self) -> dict[str, ContactStream]:
        streams: dict[str, ContactStream] = {}
        try:
            for side, sim in self.controllers.items():
                streams[side] = ContactStream(sim.ws_url)
        except SimControllerError:
            for stream in streams.values():
                stream.close()
            raise
        return streams

    def long_moves(self) -> list[LongMove]:
        """The robot's long moves, each named after what the arms were doing (approach to stroke N, park)."""
        named = []
        for i, move in enumerate(self.cameras.robot.long_moves):
            phase = next((what for first, what in reversed(self.phases) if first <= i), None)
            named.append(replace(move, what=f"{phase}: {move.what}") if phase else move)
        return named

    def stroke(self, stroke: RecordedStroke) -> StrokeResult:
        start = stroke.states[0]
        scene = replace(self.scene, ready=start)  # run_loop's first "previous command" is the scene's ready
        stats = LoopStats()
        recorder = None
        streams: dict[str, ContactStream] = {}
        phases: list[tuple[float, str]] = []
        try:
            # Contacts on the way to the start count: the stroke's own approach is part of what the arm would do.
            streams = self.open_streams()
            phases.append((time.monotonic(), "approach"))
            self.phases.append((len(self.cameras.robot.long_moves), f"approach to stroke {stroke.episode}"))
            self.robot.send(start, self.approach_time(start), blocking=True)
            # The simulators step in real time only when they get the CPU: on a loaded machine a move takes longer
            # than its goal time, and the stroke must not start from mid-move.
            wait_until_at(self.cameras.robot, start, "the stroke's first recorded state", self.rollout_limits)
            phases.append((time.monotonic(), "stroke"))
            self.cameras.play(stroke.frames)
            self.policy.reset()
            named = replace(scene, name=f"{self.scene.name}-sim-episode-{stroke.episode}")
            recorder = EvalRecorder(self.out_dir / "rollouts", named,
                                    self.policy.cameras, self.fps, info={
                                        "checkpoint_path": str(self.policy.path), "policy": self.policy.type,
                                        "task": stroke.task, "device": self.policy.device, "robot": self.cameras.name,
                                        "val_episode": stroke.episode, "sim_evaluation": True}).open()
            plan = LoopPlan(fps=self.fps, max_steps=stroke.steps, task=stroke.task)
            progress = lambda fraction, message: self.say(f"stroke {stroke.episode}: {message}")  # noqa: E731
            loop_args = (self.robot, self.policy, scene, plan, self.rollout_limits, stats, RolloutControl(), recorder,
                         progress, None)
            run_in_mode(self.mode.mode, self.tracker, *loop_args)
        except (RobotError, UnsafeAction, RolloutStopped) as e:
            stats.stop_reason = str(e)
        finally:
            events = {side: stream.close() for side, stream in streams.items()}
            if recorder is not None:
                recorder.close(**stats.as_meta(), limits=vars(self.rollout_limits), inference=self.mode.mode,
                               inference_choice=self.mode.describe())
        return self.measure(stroke, stats, events, phases, recorder)

    def approach_time(self, target: np.ndarray) -> float:
        """Goal time of the move to a stroke's start: the scene's slow goal time for a big move (from the sleep pose),
        less when the arms are already close (the previous stroke usually ends near where the next one starts)."""
        distance = np.abs(joints_of(self.cameras.robot.observe()) - target)[REVOLUTE].max()
        return float(np.clip(distance / APPROACH_SPEED_RAD_S, APPROACH_MIN_S, self.scene.goal_time_slow))

    def measure(self, stroke: RecordedStroke, stats: LoopStats, events: dict[str, list[dict]],
                phases: list[tuple[float, str]], recorder: EvalRecorder | None) -> StrokeResult:
        observed = np.stack(self.cameras.observed) if self.cameras.observed else np.zeros((0, stroke.states.shape[1]))
        steps = len(observed)
        recorded = stroke.states[:steps]
        joint_error = np.abs(observed - recorded)[:, REVOLUTE]
        planned, drawn, deviation, tip = {}, {}, {}, {}
        for side in ARMS:
            planned[side] = needle_tip_mm(stroke.states[:, arm_slice(side)], self.offsets[side])
            drawn[side] = needle_tip_mm(observed[:, arm_slice(side)], self.offsets[side])
            deviation[side] = np.linalg.norm(drawn[side] - planned[side][:steps], axis=-1)
            tip[side] = {"p95": _stat(deviation[side], 95), "max": _stat(deviation[side], 100)}
        contacts = [c for side in ARMS for c in contact_records(events.get(side, []), side, phases)]
        plot = self.out_dir / "plots" / f"stroke_{stroke.episode:04d}.png"
        save_png(tip_paths(planned, drawn, f"stroke {stroke.episode} in simulation ({steps}/{stroke.steps} steps"
                           f"{', stopped' if stats.stop_reason else ''}): needle tip seen from above",
                           {side: tip[side]["p95"] for side in ARMS}), plot)
        return StrokeResult(
            episode=stroke.episode, steps=steps, planned_steps=stroke.steps, stop_reason=stats.stop_reason,
            joint_error_p95_rad=_stat(joint_error, 95), joint_error_max_rad=_stat(joint_error, 100),
            tip_error_mm=tip, tip_error_p95_mm=max(t["p95"] for t in tip.values()),
            tip_error_max_mm=max(t["max"] for t in tip.values()),
            peak_contact_force_n=max((c["peak_force_n"] for c in contacts), default=0.0), contacts=contacts,
            missed_ticks=stats.missed_ticks, actions_clamped=stats.clamped, actions_rate_limited=stats.rate_limited,
            dataset=str(recorder.path) if recorder is not None and recorder.saved else None, plot=str(plot),
            planned_tip_mm=planned, drawn_tip_mm=drawn, tip_deviation_mm=deviation, joints=observed)


def _stat(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if np.size(values) else float("nan")


def contact_records(events: list[dict], side: str, phases: list[tuple[float, str]] = ()) -> list[dict]:
    """One record per contact (a pair of touching geoms) from a simulator's contact stream: those active when the
    stream opened (its `snapshot`), then each `begin`, closed by its `end` (which carries the peak force).

    `phases` ((time.monotonic() it began, name), in order) names what the arms were doing when each contact began
    (approach, stroke, park), by the time its event arrived; without them, or before the first, it is "stroke"."""

    def phase(event: dict) -> str:
        received = event.get("received")
        names = [name for began, name in phases if received is not None and began <= received]
        return names[-1] if names else "stroke"

    open_: dict[tuple[str, str], dict] = {}
    records: list[dict] = []

    def begin(contact: dict, at: float, event: dict) -> None:
        record = {"side": side, "body1": contact["body1"], "geom1": contact["geom1"], "body2": contact["body2"],
                  "geom2": contact["geom2"], "peak_force_n": float(contact["force"]), "sim_time_s": at,
                  "duration_s": None, "phase": phase(event)}
        open_[(contact["geom1"], contact["geom2"])] = record
        records.append(record)

    for event in events:
        kind = event.get("type")
        if kind == "snapshot":
            for contact in event.get("contacts", []):
                begin(contact, float(event["time"]), event)
        elif kind == "begin":
            begin(event, float(event["time"]), event)
        elif kind == "end":
            record = open_.pop((event["geom1"], event["geom2"]), None)
            if record is None:  # began before the stream opened and was not in its snapshot (released meanwhile)
                begin(event, float(event["time"]) - float(event["duration"]), event)
                record = open_.pop((event["geom1"], event["geom2"]))
            record["peak_force_n"] = max(record["peak_force_n"], float(event["peak_force"]))
            record["duration_s"] = float(event["duration"])
    return records
