"""Sim calibration: fit the simulated arm's plant to the lab's own recordings, so that the sim lags as hog does.

A recording holds what the arm was sent (actions, each a `goal_time_fast` command at the recording's fps) and what
it then did (observed joints). Replaying the actions through the simulated arm and comparing its joints with the
recorded ones measures the **control gap** (rad per joint, and mm at the needle tip). The fit changes what the
simulator exposes — each joint's servo gain and damping, and the command delay (robot/plant.py) — to close it:

- on the split's **train** strokes only; the gap is reported on its **val** strokes, which the sim gate judges on;
- by a grid search on the plant stepped directly in MuJoCo (much faster than the real-time controllers): for each
  command delay, per joint its gain and then its damping (every joint tries the same candidate in one replay; each
  keeps its best); the best delay with its gains wins, and each round refines around it on a finer grid;
- then confirmed once through the real thing: the fitted scene loaded by two simulated controllers, the val strokes'
  actions replayed through the `trossen_arm` driver and the rollout loop (evaluation/sim.py `replay_in_sim`).

What strokes identify: the command delay, and each servo's time constant `kv / kp` — the arm's servos are heavily
damped for its inertia, so a joint with half the gain and half the damping answers a stroke the same way to
micro-radians (measured on the stand-in robot of tests/evaluation/test_calibration.py). The fit reports kp and kv;
their ratio is the figure to compare between calibrations.

The output is a scene any simulated controller loads (`scene.xml` + `arm.xml`, the command delay inside), the fitted
parameters, the gaps before and after, and a plot of them per joint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatbot_pipeline.evaluation.sim import RecordedStroke, StrokeRun, read_strokes, recording_scene, replay_in_sim
from tatbot_pipeline.robot.kinematics import ee_offsets_mm, needle_tip_mm
from tatbot_pipeline.robot.plant import ARM_JOINTS, ArmPlant, PlantParams, write_scene
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.spec import ARMS, JOINTS_PER_ARM, arm_slice

log = logging.getLogger(__name__)

MIN_TRAIN_STROKES = 2
MAX_FIT_STROKES = 8  # enough to fit 13 parameters; more only makes the search slower
DELAYS_S = tuple(round(0.02 * i, 3) for i in range(6))  # 0–100 ms in the first round; then ±10 ms by 5 ms
ROUNDS = 3
CONFIRM_STROKES = 4
Progress = Callable[[str], None]


class CalibrationRefused(ValueError):
    """A split the plant cannot be fitted on (no actions, too few strokes)."""


@dataclass
class Gap:
    """How far the plant's replay of recorded actions lands from the recorded joints."""

    joint_p95_rad: list[float]  # per arm joint (0–5), both arms
    tip_p95_mm: float  # needle tip, worst arm, over every step

    def to_json(self) -> dict:
        return {"joint_p95_rad": [round(v, 6) for v in self.joint_p95_rad], "tip_p95_mm": round(self.tip_p95_mm, 4)}


@dataclass
class Calibration:
    split: str
    params: PlantParams
    packaged: PlantParams
    train_strokes: int  # the split's train strokes and the hardware rollouts, together
    val_strokes: int
    gap_before: Gap  # val strokes, trossen-arm-sim's own gains
    gap_after: Gap  # val strokes, fitted
    fit_s: float
    scene: str  # the fitted scene.xml
    out_dir: str
    confirmed: Gap | None = None  # the fitted scene through the real controllers and driver (val strokes)
    plot: str | None = None
    history: list[dict] = field(default_factory=list)
    rollouts: list[str] = field(default_factory=list)  # hardware rollouts fitted on, beside the train strokes

    def to_json(self) -> dict:
        return {
            "split": self.split, "params": self.params.to_json(), "packaged": self.packaged.to_json(),
            "train_strokes": self.train_strokes, "val_strokes": self.val_strokes,
            "gap_before": self.gap_before.to_json(), "gap_after": self.gap_after.to_json(),
            "confirmed": self.confirmed.to_json() if self.confirmed else None, "fit_s": round(self.fit_s, 2),
            "scene": self.scene, "out_dir": self.out_dir, "plot": self.plot, "history": self.history,
            "rollouts": self.rollouts,
        }

    def headline(self) -> str:
        confirmed = (f"; through the real controllers {self.confirmed.tip_p95_mm:.2f} mm" if self.confirmed else "")
        return (f"sim calibration on {self.train_strokes} train strokes: control gap on {self.val_strokes} val strokes "
                f"{self.gap_before.tip_p95_mm:.2f} -> {self.gap_after.tip_p95_mm:.2f} mm at the tip (p95){confirmed}; "
                f"delay {self.params.delay_s * 1000:.0f} ms, kp {_short(self.params.kp)}, kv {_short(self.params.kv)}")


def _short(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.3g}" for v in values)


def check_strokes(strokes: list[RecordedStroke], what: str) -> None:
    """Refuse strokes nothing can be fitted on: no actions recorded, or actions that never move the arm."""
    for stroke in strokes:
        if not np.isfinite(stroke.actions).all() or not np.isfinite(stroke.states).all():
            raise CalibrationRefused(f"{what}: episode {stroke.episode} has non-finite actions or joints")
    moving = [s for s in strokes if np.abs(np.diff(s.actions[:, _revolute()], axis=0)).max(initial=0) > 1e-4]
    if not moving:
        raise CalibrationRefused(f"{what}: the recorded actions never move the arms — nothing to fit the plant on "
                                 "(was `action` recorded? tatbot's recorder stores the joints it sent)")


def _revolute() -> list[int]:
    return [arm * JOINTS_PER_ARM + j for arm in range(len(ARMS)) for j in range(ARM_JOINTS)]


def replay(plant: ArmPlant, stroke: RecordedStroke, fps: float, goal_time: float) -> np.ndarray:
    """The plant's joints (T, 14) for a stroke's recorded actions, from its first recorded state."""
    states = np.empty_like(stroke.states)
    for side in ARMS:
        s = arm_slice(side)
        states[:, s] = plant.replay(stroke.states[0, s], stroke.actions[:, s], fps, goal_time)
    return states


def joint_errors(plant: ArmPlant, strokes: list[RecordedStroke], fps: float, goal_time: float) -> np.ndarray:
    """Mean squared error per arm joint (6,), both arms and every step pooled."""
    total, count = np.zeros(ARM_JOINTS), 0
    for stroke in strokes:
        diff = replay(plant, stroke, fps, goal_time) - stroke.states
        for side in ARMS:
            total += (diff[:, arm_slice(side)][:, :ARM_JOINTS] ** 2).sum(axis=0)
        count += 2 * len(diff)
    return total / max(count, 1)


def measure_gap(plant: ArmPlant, strokes: list[RecordedStroke], fps: float, goal_time: float,
                offsets: dict[str, np.ndarray]) -> Gap:
    return gap_of([(replay(plant, stroke, fps, goal_time), stroke.states) for stroke in strokes], offsets)


def tip_gaps(simulated: np.ndarray, recorded: np.ndarray, offsets: dict[str, np.ndarray]) -> np.ndarray:
    """Per step, the worst arm's needle-tip distance (mm) between two joint paths (T, 14)."""
    per_arm = [np.linalg.norm(needle_tip_mm(simulated[:, arm_slice(side)], offsets[side])
                              - needle_tip_mm(recorded[:, arm_slice(side)], offsets[side]), axis=-1) for side in ARMS]
    return np.max(per_arm, axis=0)


def gap_of(paths: list[tuple[np.ndarray, np.ndarray]], offsets: dict[str, np.ndarray]) -> Gap:
    """The gap over (simulated, recorded) joint paths (T, 14), pooled; a simulated path that stopped early is compared
    over the steps it ran."""
    joints = [np.abs(simulated - recorded[: len(simulated)])[:, _revolute()] for simulated, recorded in paths]
    tips = [tip_gaps(simulated, recorded[: len(simulated)], offsets) for simulated, recorded in paths]
    pooled = np.concatenate(joints)  # (steps, 12): left joints 0–5, right joints 0–5
    per_joint = np.percentile(np.concatenate([pooled[:, :ARM_JOINTS], pooled[:, ARM_JOINTS:]]), 95, axis=0)
    return Gap([float(v) for v in per_joint], float(np.percentile(np.concatenate(tips), 95)))


def fit_plant(strokes: list[RecordedStroke], fps: float, goal_time: float, start: PlantParams | None = None,
              progress: Progress | None = None) -> tuple[PlantParams, list[dict]]:
    """Coordinate descent (see the module docstring) from `start` (default: trossen-arm-sim's gains); returns the
    fitted parameters and the loss after each step of the search."""
    say = progress or (lambda message: log.info("%s", message))
    params = start or PlantParams.packaged()
    plant = ArmPlant(params)
    history: list[dict] = []

    def loss(candidate: PlantParams) -> np.ndarray:
        plant.set_params(candidate)
        return joint_errors(plant, strokes, fps, goal_time)

    def gains_for(base: PlantParams, spread: float) -> tuple[PlantParams, float]:
        """Each joint's best gain, then its best damping, at `base`'s delay; and the total loss after."""
        for which in ("kp", "kv"):
            scales = spread ** np.linspace(-1, 1, 9)
            current = np.array(getattr(base, which))
            losses = np.stack([loss(PlantParams(**{**_fields(base), which: tuple(current * s)})) for s in scales])
            chosen = current * scales[np.argmin(losses, axis=0)]  # each joint its own best scale
            base = PlantParams(**{**_fields(base), which: tuple(float(v) for v in chosen)})
        return base, float(loss(base).sum())

    # A delay and soft servos both make the arm late: each delay is tried with the gains fitted for it (the whole
    # grid in the first round, its neighbours after), so that neither stands in for the other.
    spread = 4.0  # gain scales tried: spread^(-1 .. 1) around the current value, narrowing each round
    for round_ in range(ROUNDS):
        delays = DELAYS_S if round_ == 0 else sorted({max(0.0, round(params.delay_s + d, 4))
                                                      for d in (-0.01, -0.005, 0.0, 0.005, 0.01)})
        fitted = [gains_for(PlantParams(params.kp, params.kv, d), spread) for d in delays]
        params, total = min(fitted, key=lambda pair: pair[1])
        history.append({"round": round_ + 1, "loss_rad2": total, **params.to_json()})
        say(f"sim calibration: round {round_ + 1}/{ROUNDS}: squared joint error {total:.3g} rad², delay "
            f"{params.delay_s * 1000:.0f} ms, kp {_short(params.kp)}, kv {_short(params.kv)}")
        spread = spread ** 0.5
    return params, history


def _fields(params: PlantParams) -> dict:
    return {"kp": params.kp, "kv": params.kv, "delay_s": params.delay_s}


def calibrate(split_root: Path, out_dir: Path, confirm: bool = True, progress: Progress | None = None,
              start: PlantParams | None = None, rollouts: list[Path] = ()) -> Calibration:
    """Fit the plant on `split_root/train` and on `rollouts` (eval datasets of hardware rollouts: what the policy
    sent and what hog did), report the gap on `split_root/val`, write the fitted scene to `out_dir`."""
    say = progress or (lambda message: log.info("%s", message))
    split_root, out_dir = Path(split_root), Path(out_dir)
    began = time.monotonic()
    train, fps = read_strokes(split_root / "train", None, frames=False)
    val, _ = read_strokes(split_root / "val", None, frames=False)
    for rollout in rollouts:
        strokes, rollout_fps = read_strokes(rollout, None, frames=False)
        if rollout_fps == fps:  # one rate per fit: the plant is fitted tick by tick
            train += strokes
        else:
            say(f"sim calibration: {rollout.name} ran at {rollout_fps} fps, the split at {fps}: left out")
    if len(train) < MIN_TRAIN_STROKES:
        raise CalibrationRefused(f"{split_root}/train: {len(train)} stroke(s) — at least {MIN_TRAIN_STROKES} are "
                                 "needed to fit the plant (record more strokes, or lower val_fraction)")
    check_strokes(train, f"{split_root}/train")
    scene = recording_scene(split_root / "val")
    goal_time, offsets = scene.goal_time_fast, ee_offsets_mm(scene.data)
    fit_on = train[:: max(1, len(train) // MAX_FIT_STROKES)][:MAX_FIT_STROKES]
    say(f"sim calibration: fitting the plant on {len(fit_on)} of {len(train)} train strokes ({fps} fps, goal time "
        f"{goal_time:g} s)")
    packaged = PlantParams.packaged()
    params, history = fit_plant(fit_on, fps, goal_time, start, say)
    before = measure_gap(ArmPlant(packaged), val, fps, goal_time, offsets)
    after = measure_gap(ArmPlant(params), val, fps, goal_time, offsets)
    scene_path = write_scene(out_dir, params, name=f"tatbot arm calibrated on {split_root.name}")
    result = Calibration(str(split_root), params, packaged, len(train), len(val), before, after,
                         time.monotonic() - began, str(scene_path), str(out_dir), history=history,
                         rollouts=[str(r) for r in rollouts])
    if confirm:
        say("sim calibration: confirming the fitted scene through two simulated controllers and the real driver")
        result.confirmed = confirm_gap(split_root / "val", out_dir / "confirm", scene_path)
    result.plot = str(plot_gap(result, out_dir / "gap.png"))
    (out_dir / "calibration.json").write_text(json.dumps(result.to_json(), indent=2))
    say(result.headline())
    return result


def confirm_gap(val_root: Path, out_dir: Path, scene: Path) -> Gap:
    """The recorded actions of up to CONFIRM_STROKES val strokes replayed on `scene` by the real-time controllers
    through the driver: the gap as the sim evaluation will meet it."""
    strokes, fps = read_strokes(val_root, CONFIRM_STROKES, frames=False)
    return replayed_gap(strokes, fps, out_dir, recording_scene(val_root), scene)[0]


def replayed_gap(strokes: list[RecordedStroke], fps: int, out_dir: Path, scene: RobotScene,
                 plant_scene: Path | None) -> tuple[Gap, list[StrokeRun]]:
    """Strokes' recorded actions replayed on simulated controllers (evaluation/sim.py `replay_in_sim`), and the gap
    between what the simulated arms did and what was recorded; raises when no replay ran a step."""
    runs = replay_in_sim(strokes, fps, out_dir, scene, plant_scene=plant_scene)
    paths = [(run.observed, stroke.states) for stroke, run in zip(strokes, runs) if len(run.observed)]
    if not paths:
        raise RuntimeError(f"the replay ran no step ({runs[0].stats.stop_reason if runs else 'no stroke'})")
    return gap_of(paths, ee_offsets_mm(scene.data)), runs


def plot_gap(result: Calibration, path: Path) -> Path:
    """Per joint, the control gap on the val strokes before and after the fit (and through the controllers)."""
    from tatbot_pipeline.evaluation.sim_plot import save_png
    from tatbot_pipeline.plots import plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(ARM_JOINTS)
    bars = [("trossen-arm-sim's gains", result.gap_before, "tab:gray"), ("fitted", result.gap_after, "tab:blue")]
    if result.confirmed:
        bars.append(("fitted, through the controllers", result.confirmed, "tab:green"))
    width = 0.8 / len(bars)
    for i, (label, gap, color) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, gap.joint_p95_rad, width, color=color,
               label=f"{label} (tip {gap.tip_p95_mm:.1f} mm)")
    ax.set_xticks(x, [f"joint_{j}" for j in x])
    ax.set_ylabel("simulated vs recorded, p95 (rad)")
    ax.set_title(f"control gap on {result.val_strokes} val strokes", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


TWIN_FILE = "meta/sim_twin.json"


def is_hardware_rollout(eval_dir: Path) -> bool:
    """An eval dataset `vla_infer` recorded on the `tatbot` backend (real arms, or a stand-in's controllers), not a
    sim evaluation's rollout nor the sim backend's."""
    from tatbot_pipeline.inference.eval_record import EVAL_META

    try:
        meta = json.loads((Path(eval_dir) / EVAL_META).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("robot") == "tatbot" and not meta.get("sim_evaluation")


def pair_with_sim(eval_dir: Path, out_dir: Path, plant_scene: Path | None = None) -> dict:
    """A hardware rollout replayed on its twin: its recorded actions sent to the simulated arms (`plant_scene`, the
    calibrated scene, else trossen-arm-sim's gains) from its first recorded state; the sim-vs-real gap, kept in the
    eval dataset (`meta/sim_twin.json`) and returned."""
    eval_dir = Path(eval_dir)
    strokes, fps = read_strokes(eval_dir, None, frames=False)
    try:
        gap, runs = replayed_gap(strokes, fps, out_dir, recording_scene(eval_dir), plant_scene)
    except RuntimeError as e:
        raise RuntimeError(f"{eval_dir}: {e}") from None
    twin = {"plant": str(plant_scene) if plant_scene else "trossen-arm-sim's gains (not calibrated)",
            "steps": sum(len(run.observed) for run in runs), **gap.to_json(),
            "stopped": next((r.stats.stop_reason for r in runs if r.stats.stop_reason), None)}
    (eval_dir / TWIN_FILE).write_text(json.dumps(twin, indent=2))
    return twin
