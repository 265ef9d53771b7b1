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

**Judged against the expert in the same sim.** Before the policy runs a stroke, the stroke's recorded actions are
replayed through the same loop on the same simulated arms (`ExpertReplay`): the expert's simulated path is what a
perfect policy would draw on this plant. The policy's needle-tip deviation is measured from that path, step by step,
not from the recorded one: a simulated arm that lags or overshoots the real one does so for both, and the gate
judges what the policy sent, not how well the simulator matches hog. The first `NOISE_STROKES` strokes are replayed
twice; how far the two replays differ is the evaluation's **noise floor** (the controllers step in real time), and a
tip limit too close to it is refused rather than applied (sim_gate.py). A contact or a stop the expert's replay of
the same stroke also has is the model's, reported and not counted. The absolute figures (policy and expert against
the recorded path) stay in the report.

Measured per stroke: joint tracking against the recorded stroke (simulated vs recorded observed joints, revolute,
rad), the needle-tip deviations in mm (robot/kinematics.py, per arm), every contact the simulator streamed (bodies,
peak force), the stop reason, missed ticks and actions clamped. Each stroke's policy rollout is kept as a LeRobot
dataset (inference/eval_record.py) with one drawn-vs-planned plot; the sim gate (evaluation/sim_gate.py) decides.

The simulated arms are the plant of robot/plant.py: the lab's calibrated one (evaluation/calibration.py) when given,
else trossen-arm-sim's servo gains; tatbot's tool instead of the WidowX gripper either way.
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
from tatbot_pipeline.robot.plant import PlantParams, write_scene
from tatbot_pipeline.config import RolloutLimits
from tatbot_pipeline.robot.safety import REVOLUTE, UnsafeAction
from tatbot_pipeline.robot.scene import RobotScene, builtin_scene, scene_from_dict
from tatbot_pipeline.robot.setpoints import LongMove, wrong_way
from tatbot_pipeline.robot.sim_controllers import ArmSim, ContactStream, SimControllerError, sim_controllers
from tatbot_pipeline.robot.spec import ARMS, JOINTS_PER_ARM, arm_slice
from tatbot_pipeline.robot.tatbot import TatbotRobot

log = logging.getLogger(__name__)

DEFAULT_EPISODES = 8
SIM_CONNECTION_TIMEOUT_S = 2.0  # a simulated controller answers in ms; a dead one should not hold the evaluation
APPROACH_SPEED_RAD_S = 0.75  # the move to a stroke's start: about half the envelope's 1.5 rad/s
APPROACH_MIN_S = 0.5
NOISE_STROKES = 2  # strokes whose expert replay runs twice: the evaluation's own noise floor
# Every run of a stroke starts with the arms this still (rad/s): the rest bound of a long move (0.05) leaves the
# servo's last millimetres to settle while the stroke already runs.
SETTLED_RAD_S = 0.01
JITTER_S = 0.02  # the timing a step's tip is compared within (see `tip_deviation`)
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


def read_strokes(val_root: Path, max_episodes: int | None = DEFAULT_EPISODES,
                 frames: bool = True) -> tuple[list[RecordedStroke], int]:
    """The first `max_episodes` episodes of a LeRobot dataset (the val split), and its fps; without `frames`, the
    joints only (no video decoded: what a replay of the actions needs)."""
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
        if not frames:
            rows = dataset.hf_dataset.select(range(start, end))
            states = np.stack([np.asarray(v, dtype=np.float32) for v in rows[STATE]])
            actions = np.stack([np.asarray(v, dtype=np.float32) for v in rows["action"]])
            task = dataset.meta.tasks.iloc[int(rows[0]["task_index"])].name  # as lerobot's reader names it
            strokes.append(RecordedStroke(ep, str(task), states, actions, []))
            continue
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


@dataclass(frozen=True)
class ExpertVariant:
    """The recorded actions as the policy: exact (the reference every policy is judged against), or made known-bad
    on purpose to show what the gate catches (a bias on some joints of both arms, a delay of whole steps)."""

    bias_rad: float = 0.0
    bias_joints: tuple[int, ...] = (1, 2)  # of each arm: shoulder and elbow
    delay_steps: int = 0

    def describe(self) -> str:
        parts = [f"+{self.bias_rad:g} rad on joints {', '.join(map(str, self.bias_joints))}"] if self.bias_rad else []
        parts += [f"{self.delay_steps} step(s) late"] if self.delay_steps else []
        return "the expert's recorded actions" + (f" ({', '.join(parts)})" if parts else "")


class ExpertReplay:
    """One stroke's recorded actions, sent as a policy's would be: through the same loop, envelope and monitors."""

    type = "expert"
    device = "cpu"
    n_action_steps = 1
    executes_chunks = False
    supports_rtc = False
    cameras: dict[str, tuple[int, int]] = {}

    def __init__(self, stroke: "RecordedStroke", variant: ExpertVariant = ExpertVariant()) -> None:
        actions = stroke.actions.astype(np.float32).copy()
        if variant.bias_rad:
            columns = [arm * JOINTS_PER_ARM + j for arm in range(len(ARMS)) for j in variant.bias_joints]
            actions[:, columns] += variant.bias_rad
        if variant.delay_steps:  # a late policy holds the start until its first answer arrives
            held = np.repeat(stroke.states[:1], variant.delay_steps, axis=0)
            actions = np.concatenate([held, actions])[: len(actions)]
        self.actions, self.variant = actions, variant
        self.path = Path(f"expert-replay-episode-{stroke.episode}")
        self.step = 0

    def reset(self) -> None:
        self.step = 0

    def act(self, frame: dict[str, np.ndarray], task: str) -> np.ndarray:
        action = self.actions[min(self.step, len(self.actions) - 1)]
        self.step += 1
        return action.copy()


PolicyFor = Callable[[RecordedStroke], Any]  # the policy that runs a stroke: a LoadedPolicy, or an ExpertReplay


@dataclass
class StrokeRun:
    """One closed-loop run of a stroke on the simulated arms."""

    observed: np.ndarray  # (steps, 14) the joints the loop observed
    stats: LoopStats
    contacts: list[dict]
    dataset: str | None = None

    @property
    def completed(self) -> bool:
        return self.stats.stop_reason is None


@dataclass
class StrokeResult:
    episode: int
    steps: int  # control steps run
    planned_steps: int  # the recorded stroke's length
    stop_reason: str | None
    joint_error_p95_rad: float
    joint_error_max_rad: float
    tip_error_mm: dict[str, dict[str, float]]  # side -> {"p95": mm, "max": mm}, from the reference path
    tip_error_p95_mm: float  # worst arm, from the reference path (what the gate judges)
    tip_error_max_mm: float
    peak_contact_force_n: float  # any contact, needle included
    contacts: list[dict]  # side, body1 (the arm's), geom1, body2, geom2, peak_force_n, sim_time_s, duration_s, phase
    missed_ticks: int
    actions_clamped: int
    actions_rate_limited: int
    dataset: str | None  # the rollout's LeRobot dataset
    plot: str | None  # the drawn-vs-planned PNG
    park_failure: str | None = None  # the last stroke's: why the arms did not reach home after it
    reference: str = "recorded path"  # what tip_error_* is measured from: "expert replay", else the recorded path
    recorded_tip_p95_mm: float = float("nan")  # the policy's tip deviation from the recorded path (absolute)
    expert_tip_p95_mm: float = float("nan")  # the expert replay's from the recorded path: the plant's own mismatch
    noise_tip_p95_mm: float | None = None  # the expert replayed twice: how far the two runs differ
    expert_stop_reason: str | None = None  # the expert's replay of this stroke stopped too: a model stop
    model_contacts: list[dict] = field(default_factory=list)  # the policy's contacts the expert's replay also made
    planned_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (T, 3)
    drawn_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps, 3)
    expert_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps, 3)
    tip_deviation_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps,)
    noise_tip_mm: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # side -> (steps,): again vs first
    joints: np.ndarray | None = field(repr=False, default=None)  # (steps, 14) the simulated arms' observed joints

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items()
               if k not in ("planned_tip_mm", "drawn_tip_mm", "expert_tip_mm", "tip_deviation_mm", "noise_tip_mm",
                            "joints")}
        return _finite(out)

    @property
    def counted_stop(self) -> str | None:
        """The stop the gate counts: the policy's, unless the expert's replay of the stroke stopped too."""
        return None if self.expert_stop_reason else self.stop_reason

    def verdict(self, limits: SimGateLimits) -> str:
        """One line per stroke for a shell: what a tattoo artist asks first."""
        contacts = [c for c in self.contacts if outside_needle(c, limits)]
        touched = "".join(f"; touched {c['body2']} with {c['body1']} ({c['peak_force_n']:.1f} N"
                          f"{'' if c.get('phase', 'stroke') == 'stroke' else ', during the ' + c['phase']})"
                          for c in contacts)
        model = f"; {len(self.model_contacts)} model contact(s) the expert makes too" if self.model_contacts else ""
        stopped = f"; STOPPED at step {self.steps}: {self.stop_reason}" if self.stop_reason else ""
        stopped += " (the expert's replay stopped too: not counted)" if self.stop_reason and self.expert_stop_reason else ""
        stopped += f"; NOT PARKED: {self.park_failure}" if self.park_failure else ""
        too_hard = [c for c in contacts if c["peak_force_n"] > limits.max_contact_force_n]  # the gate's own rule
        ok = (self.tip_error_p95_mm <= limits.tip_deviation_mm and not self.counted_stop and not too_hard
              and not self.park_failure)
        return (f"stroke {self.episode}: {'ok' if ok else 'FAIL'} — tip deviation from the {self.reference} p95 "
                f"{self.tip_error_p95_mm:.2f} mm (max {self.tip_error_max_mm:.2f}); from the recorded path "
                f"{self.recorded_tip_p95_mm:.2f} mm (the expert's replay {self.expert_tip_p95_mm:.2f}); joints p95 "
                f"{self.joint_error_p95_rad:.3f} rad, {self.steps}/{self.planned_steps} steps, {self.missed_ticks} "
                f"missed ticks, {self.actions_clamped} clamped{touched}{model}{stopped}")


@dataclass
class SimEvaluation:
    checkpoint: str
    val_root: str
    fps: int
    limits: SimGateLimits
    records: list[StrokeResult]
    decision: SimGateDecision
    tip_error_mm_p95: float  # over every step of every stroke, both arms, from the reference paths
    out_dir: str
    controllers: dict[str, str]  # side -> address (loopback)
    inference: str  # the mode the strokes ran in: sync or async
    ended_early: str | None = None  # why strokes were left out (a controller that never came back)
    # Each long move (approach, park) and arm, checked on the setpoints its controller received (robot/setpoints.py
    # `wrong_way`); empty when the controllers kept no setpoint log.
    long_moves: list[dict] = field(default_factory=list)
    plant: str = ""  # which simulated arms: the calibrated scene, or trossen-arm-sim's gains

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

    @property
    def noise_floor_mm(self) -> float | None:
        return self.decision.noise_floor_mm

    @property
    def expert_tip_p95_mm(self) -> float:
        """The expert replay's tip deviation from the recorded path (worst stroke): how far the sim is from hog."""
        return max((r.expert_tip_p95_mm for r in self.records if np.isfinite(r.expert_tip_p95_mm)), default=float("nan"))

    def to_json(self) -> dict:
        return _finite({
            "passed": self.passed, "strokes": self.strokes, "tip_error_mm_p95": self.tip_error_mm_p95,
            "reasons": self.reasons, "headline": self.decision.headline(), "checkpoint": self.checkpoint,
            "val_root": self.val_root, "fps": self.fps, "limits": asdict(self.limits),
            "criteria": [asdict(c) for c in self.decision.criteria], "ended_early": self.ended_early,
            "refused": self.decision.refused, "noise_floor_mm": self.noise_floor_mm,
            "expert_tip_p95_mm": self.expert_tip_p95_mm, "plant": self.plant,
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
    progress: Progress | None = None, plant_scene: Path | None = None, noise_strokes: int = NOISE_STROKES,
) -> SimEvaluation:
    """Roll `checkpoint` out on up to `episodes` held-out strokes of `val_root` in simulation and gate it.

    `controllers` reuses running simulated controllers (`{"left": ArmSim, "right": ArmSim}`); without them a pair is
    started under `out_dir/controllers` and stopped afterwards, whatever happens: on `plant_scene` (a calibration's
    scene, evaluation/calibration.py), else on trossen-arm-sim's gains with tatbot's tool (robot/plant.py), except
    for the arms `arm_scenes` gives their own MJCF scene. `scene` defaults to the val split's scene.yaml (its ee
    offsets). Rollout datasets go to `out_dir/rollouts`, plots to `out_dir/plots`. `inference` is `vla_infer`'s:
    "auto" runs the mode the robot would run this checkpoint in (async when its warm-up chunk latency calls for it).
    `noise_strokes`: how many strokes the expert replays twice (0: no noise floor, and no refusal)."""
    import lerobot.policies  # noqa: F401  registers the policy configs
    from lerobot.configs.policies import PreTrainedConfig

    checkpoint = Path(checkpoint)
    strokes, fps = read_strokes(val_root, episodes)
    policy = load_policy(checkpoint, PreTrainedConfig.from_pretrained(checkpoint).type, device)
    base = scene or recording_scene(Path(val_root))
    mode, tracker = choose_mode(policy, base, strokes[0].task, fps, inference)
    return _evaluate(str(checkpoint), lambda stroke: policy, mode, tracker, strokes, fps, Path(val_root), Path(out_dir),
                     limits, rollout_limits, base, controllers, arm_scenes, plant_scene, progress, noise_strokes)


def evaluate_expert_in_sim(
    val_root: Path, out_dir: Path, variant: ExpertVariant = ExpertVariant(), episodes: int = DEFAULT_EPISODES,
    limits: SimGateLimits = SimGateLimits(), rollout_limits: RolloutLimits | None = None,
    controllers: dict[str, ArmSim] | None = None, plant_scene: Path | None = None, progress: Progress | None = None,
) -> SimEvaluation:
    """The sim gate's calibration: `variant` of the recorded actions judged like a checkpoint. The exact replay must
    pass; a small bias or a step of delay must fail (tests/evaluation/test_sim_gate_resolution.py, bench)."""
    strokes, fps = read_strokes(val_root, episodes, frames=False)
    base = recording_scene(Path(val_root))
    mode = ModeChoice("sync", 0.0, "the expert's replay (no inference)")
    return _evaluate(variant.describe(), lambda stroke: ExpertReplay(stroke, variant), mode, None, strokes, fps,
                     Path(val_root), Path(out_dir), limits, rollout_limits, base, controllers, None, plant_scene,
                     progress, NOISE_STROKES)


def _evaluate(name: str, policy_for: PolicyFor, mode: ModeChoice, tracker: Any, strokes: list[RecordedStroke],
              fps: int, val_root: Path, out_dir: Path, limits: SimGateLimits, rollout_limits: RolloutLimits | None,
              base: RobotScene, controllers: dict[str, ArmSim] | None, arm_scenes: dict[str, Path | None] | None,
              plant_scene: Path | None, progress: Progress | None, noise_strokes: int) -> SimEvaluation:
    say = progress or (lambda message: log.info("%s", message))
    say(f"running {mode.describe()}")
    with ExitStack() as stack:
        if controllers is None:
            plant_scene = Path(plant_scene) if plant_scene else write_scene(out_dir / "plant", PlantParams.packaged())
            say(f"starting two simulated arm controllers on {plant_scene}")
            scenes = {side: (arm_scenes or {}).get(side) or plant_scene for side in ARMS}
            controllers = stack.enter_context(sim_controllers(out_dir / "controllers", scenes=scenes,
                                                              log_setpoints=True))
        plant = describe_plant(controllers)
        session = _SimSession(policy_for, sim_scene(base, controllers), controllers, fps, out_dir, limits,
                              rollout_limits or RolloutLimits(), say, mode, tracker, noise_strokes)
        records, ended_early = session.run(strokes)
    # After the controllers stopped (their logs are complete then; reused ones log what they have flushed so far).
    long_moves = wrong_way(session.long_moves(), {side: sim.setpoint_log for side, sim in controllers.items()
                                                  if sim.log_setpoints})
    deviations = [d for r in records for d in r.tip_deviation_mm.values() if len(d)]
    p95 = float(np.percentile(np.concatenate(deviations), 95)) if deviations else float("nan")
    # Pooled like the p95 it is compared with: every step of every twice-replayed stroke, both arms.
    noise = [d for r in records for d in r.noise_tip_mm.values() if len(d)]
    floor = float(np.percentile(np.concatenate(noise), 95)) if noise else None
    decision = decide_sim(records, p95, limits, noise_floor_mm=floor)
    if ended_early:
        decision = replace(decision, passed=False, reasons=[*decision.reasons, ended_early])
    result = SimEvaluation(name, str(val_root), fps, limits, records, decision, p95, str(out_dir),
                           {side: sim.host for side, sim in controllers.items()}, mode.mode, ended_early, long_moves,
                           plant)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sim_evaluation.json").write_text(json.dumps(result.to_json(), indent=2))
    if (worst := result.worst_wrong_way) is not None:
        say(f"{len(long_moves)} long moves (approach, park) checked on the setpoints the controllers received: at most "
            f"{worst['worst_rad']:.4f} rad away from the goal ({worst['worst']}, {worst['what']})")
    say(decision.headline())
    return result


def replay_in_sim(strokes: list[RecordedStroke], fps: int, out_dir: Path, scene: RobotScene,
                  plant_scene: Path | None = None, controllers: dict[str, ArmSim] | None = None,
                  rollout_limits: RolloutLimits | None = None) -> list[StrokeRun]:
    """Each stroke's recorded actions replayed through the loop on simulated controllers (started on `plant_scene`
    unless given), from its first recorded state at rest; the arms parked after. What a hardware rollout's twin or a
    stand-in robot's recording is made of."""
    out_dir = Path(out_dir)
    mode = ModeChoice("sync", 0.0, "a replay of recorded actions")
    with ExitStack() as stack:
        if controllers is None:
            plant_scene = Path(plant_scene) if plant_scene else write_scene(out_dir / "plant", PlantParams.packaged())
            controllers = stack.enter_context(sim_controllers(out_dir / "controllers", scenes=dict.fromkeys(
                ARMS, plant_scene)))
        session = _SimSession(ExpertReplay, sim_scene(scene, controllers), controllers, fps, out_dir, SimGateLimits(),
                              rollout_limits or RolloutLimits(), lambda message: log.info("%s", message), mode, None)
        session.cameras = RecordedCameras(TatbotRobot(session.scene, enable_realsense=False,
                                                      limits=session.rollout_limits), {})
        session.robot, session.phases = GuardedRobot(session.cameras), []
        try:
            session.robot.connect()
            return [session.run_stroke(stroke, ExpertReplay(stroke), "a replay") for stroke in strokes]
        finally:
            session.park(None)


def describe_plant(controllers: dict[str, ArmSim]) -> str:
    """Which simulated arms an evaluation ran on, for its report."""
    scenes = sorted({str(sim.scene) if sim.scene else "trossen-arm-sim's packaged scene" for sim in controllers.values()})
    return ", ".join(scenes)


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

    policy_for: PolicyFor
    scene: RobotScene
    controllers: dict[str, ArmSim]
    fps: int
    out_dir: Path
    limits: SimGateLimits
    rollout_limits: RolloutLimits
    say: Progress
    mode: ModeChoice
    tracker: Any  # lerobot LatencyTracker (async mode schedules chunks by it)
    noise_strokes: int = NOISE_STROKES

    def run(self, strokes: list[RecordedStroke]) -> tuple[list[StrokeResult], str | None]:
        """Every stroke, in order: the expert's replay (twice for the first NOISE_STROKES), then the policy; the robot
        disconnected (parked at home) whatever happens."""
        judged = self.policy_for(strokes[0]) if strokes else None
        self.cameras = RecordedCameras(TatbotRobot(self.scene, enable_realsense=False, limits=self.rollout_limits),
                                       judged.cameras if judged is not None else {})
        self.robot = GuardedRobot(self.cameras)
        self.offsets = ee_offsets_mm(self.scene.data)
        records: list[StrokeResult] = []
        ended_early = None
        self.phases: list[tuple[int, str]] = []  # (index of the first long move, what the arms were doing)
        if self.mode.mode == "async" and getattr(judged, "supports_rtc", False):
            judged.enable_rtc(execution_horizon=judged.n_action_steps)  # as vla_infer does
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
                expert = self.run_stroke(stroke, ExpertReplay(stroke), "the expert's replay")
                again = (self.run_stroke(stroke, ExpertReplay(stroke), "the expert's second replay")
                         if n < self.noise_strokes else None)
                policy = self.run_stroke(stroke, self.policy_for(stroke), "the policy", record=True)
                records.append(self.measure(stroke, policy, expert, again))
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

    def run_stroke(self, stroke: RecordedStroke, policy: Any, who: str, record: bool = False) -> StrokeRun:
        """One closed-loop run of `stroke` by `policy` from the stroke's first recorded state, at rest."""
        start = stroke.states[0]
        scene = replace(self.scene, ready=start)  # run_loop's first "previous command" is the scene's ready
        stats = LoopStats()
        recorder = None
        streams: dict[str, ContactStream] = {}
        phases: list[tuple[float, str]] = []
        expert = isinstance(policy, ExpertReplay)
        try:
            # Contacts on the way to the start count: the stroke's own approach is part of what the arm would do.
            streams = self.open_streams()
            phases.append((time.monotonic(), "approach"))
            self.phases.append((len(self.cameras.robot.long_moves), f"approach to stroke {stroke.episode} ({who})"))
            self.robot.send(start, self.approach_time(start), blocking=True)
            # The simulators step in real time only when they get the CPU: on a loaded machine a move takes longer
            # than its goal time, and the stroke must not start from mid-move, nor from the tail of the approach.
            wait_until_at(self.cameras.robot, start, "the stroke's first recorded state", self.rollout_limits)
            self.cameras.robot.settle(SETTLED_RAD_S)
            phases.append((time.monotonic(), "stroke"))
            self.cameras.play(stroke.frames)
            policy.reset()
            if record:
                named = replace(scene, name=f"{self.scene.name}-sim-episode-{stroke.episode}")
                recorder = EvalRecorder(self.out_dir / "rollouts", named, self.cameras.cameras, self.fps, info={
                    "checkpoint_path": str(policy.path), "policy": policy.type, "task": stroke.task,
                    "device": policy.device, "robot": self.cameras.name, "val_episode": stroke.episode,
                    "sim_evaluation": True}).open()
            plan = LoopPlan(fps=self.fps, max_steps=stroke.steps, task=stroke.task)
            progress = lambda fraction, message: self.say(f"stroke {stroke.episode}: {message}")  # noqa: E731
            quiet = lambda fraction, message: None  # noqa: E731  (the expert's steps: one line per stroke is enough)
            loop_args = (self.robot, policy, scene, plan, self.rollout_limits, stats, RolloutControl(), recorder,
                         quiet if expert else progress, None)
            run_in_mode("sync" if expert else self.mode.mode, self.tracker, *loop_args)
        except (RobotError, UnsafeAction, RolloutStopped) as e:
            stats.stop_reason = str(e)
        finally:
            events = {side: stream.close() for side, stream in streams.items()}
            if recorder is not None:
                recorder.close(**stats.as_meta(), limits=vars(self.rollout_limits), inference=self.mode.mode,
                               inference_choice=self.mode.describe())
        observed = np.stack(self.cameras.observed) if self.cameras.observed else np.zeros((0, stroke.states.shape[1]))
        contacts = [c for side in ARMS for c in contact_records(events.get(side, []), side, phases)]
        dataset = str(recorder.path) if recorder is not None and recorder.saved else None
        return StrokeRun(observed, stats, contacts, dataset)

    def approach_time(self, target: np.ndarray) -> float:
        """Goal time of the move to a stroke's start: the scene's slow goal time for a big move (from the sleep pose),
        less when the arms are already close (the previous stroke usually ends near where the next one starts)."""
        distance = np.abs(joints_of(self.cameras.robot.observe()) - target)[REVOLUTE].max()
        return float(np.clip(distance / APPROACH_SPEED_RAD_S, APPROACH_MIN_S, self.scene.goal_time_slow))

    def tips(self, joints: np.ndarray) -> dict[str, np.ndarray]:
        return {side: needle_tip_mm(joints[:, arm_slice(side)], self.offsets[side]) for side in ARMS}

    def measure(self, stroke: RecordedStroke, run: StrokeRun, expert: StrokeRun, again: StrokeRun | None) -> StrokeResult:
        observed, stats = run.observed, run.stats
        steps = len(observed)
        recorded = stroke.states[:steps]
        joint_error = np.abs(observed - recorded)[:, REVOLUTE]
        planned, drawn, expert_tip = self.tips(stroke.states), self.tips(observed), self.tips(expert.observed)
        # The reference is the expert's simulated path, over the steps its replay ran; the recorded path after those
        # (where the expert's replay stopped, a model stop, it has nothing to compare with).
        shared = min(len(expert.observed), steps)
        reference_name = "expert's replay" if shared == steps else (
            f"expert's replay (first {shared} steps; the recorded path after)" if shared else "recorded path")
        deviation, tip = {}, {}
        for side in ARMS:
            deviation[side] = np.concatenate([
                tip_deviation(drawn[side][:shared], expert_tip[side][:shared], self.fps),
                tip_deviation(drawn[side][shared:], planned[side][shared:steps], self.fps)])
            tip[side] = {"p95": _stat(deviation[side], 95), "max": _stat(deviation[side], 100)}
        noise: dict[str, np.ndarray] = {}
        if again is not None and again.completed and expert.completed:
            noise = {side: tip_deviation(tips, expert_tip[side][: len(tips)], self.fps)
                     for side, tips in self.tips(again.observed).items()}
        # A contact the expert's replay of the stroke also made (same arm, same pair of bodies) is the model's.
        made = {(c["side"], c["body1"], c["body2"]) for c in expert.contacts}
        counted = [c for c in run.contacts if (c["side"], c["body1"], c["body2"]) not in made]
        model = [c for c in run.contacts if (c["side"], c["body1"], c["body2"]) in made]
        plot = self.out_dir / "plots" / f"stroke_{stroke.episode:04d}.png"
        save_png(tip_paths(planned, drawn, f"stroke {stroke.episode} in simulation ({steps}/{stroke.steps} steps"
                           f"{', stopped' if stats.stop_reason else ''}): needle tip seen from above",
                           {side: tip[side]["p95"] for side in ARMS}, expert=expert_tip), plot)
        return StrokeResult(
            episode=stroke.episode, steps=steps, planned_steps=stroke.steps, stop_reason=stats.stop_reason,
            joint_error_p95_rad=_stat(joint_error, 95), joint_error_max_rad=_stat(joint_error, 100),
            tip_error_mm=tip, tip_error_p95_mm=max(t["p95"] for t in tip.values()),
            tip_error_max_mm=max(t["max"] for t in tip.values()),
            peak_contact_force_n=max((c["peak_force_n"] for c in counted), default=0.0), contacts=counted,
            missed_ticks=stats.missed_ticks, actions_clamped=stats.clamped, actions_rate_limited=stats.rate_limited,
            dataset=run.dataset, plot=str(plot), reference=reference_name,
            recorded_tip_p95_mm=_worst_p95(drawn, planned), expert_tip_p95_mm=_worst_p95(expert_tip, planned),
            noise_tip_p95_mm=max(_stat(d, 95) for d in noise.values()) if noise else None,
            noise_tip_mm=noise, expert_stop_reason=expert.stats.stop_reason, model_contacts=model,
            planned_tip_mm=planned, drawn_tip_mm=drawn, expert_tip_mm=expert_tip, tip_deviation_mm=deviation,
            joints=observed)


def tip_deviation(drawn: np.ndarray, reference: np.ndarray, fps: float, jitter_s: float = JITTER_S) -> np.ndarray:
    """Per step, the distance (mm) from a drawn tip (T, 3) to the reference path (T, 3) at the same time, give or
    take `jitter_s` (the reference interpolated linearly between its steps).

    The simulated controllers step in real time on a shared CPU, so a step's observation comes a few ms early or
    late: at the synthetic strokes' 5–27 mm per step, two replays of the same actions differ by up to 3 mm at the
    same step index (measured), which is timing, not path. Within ±`jitter_s`, a step meets the reference where it
    was a moment earlier or later; a bias (a different place) is not absorbed, and a step of delay (100 ms at 10 fps)
    only by `jitter_s` of it."""
    drawn, reference = np.asarray(drawn, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if not len(drawn):
        return np.zeros(0)
    shifts = np.linspace(-jitter_s * fps, jitter_s * fps, 9)  # in steps
    at = np.clip(np.arange(len(drawn))[:, None] + shifts[None, :], 0, len(reference) - 1)  # (T, 9)
    low = np.floor(at).astype(int)
    high = np.minimum(low + 1, len(reference) - 1)
    weight = (at - low)[..., None]
    candidates = reference[low] * (1 - weight) + reference[high] * weight  # (T, 9, 3)
    return np.linalg.norm(candidates - drawn[:, None, :], axis=-1).min(axis=1)


def _worst_p95(paths: dict[str, np.ndarray], planned: dict[str, np.ndarray]) -> float:
    """The worst arm's p95 tip distance of `paths` from the planned ones (over the steps both have)."""
    return max(_stat(np.linalg.norm(path - planned[side][: len(path)], axis=-1), 95) for side, path in paths.items())


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
