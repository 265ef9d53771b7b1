"""Synthetic stroke recordings, written the way tatbot's `stroke_tool` and its LeRobot fork write them (DESIGN.md §1).

`RecordingSession` replays stroke_tool's loop (hu-po/tatbot `src/tatbot/tools/robot/stroke.py`): scene.yaml,
strokes.yaml + arrays/ and strokebatch.safetensors first, then one episode per stroke pair — per pose step the
joystick may move a depth offset, the observation is read, `StrokeBatch.offset_joints` at each arm's current offset
is sent, and the frame holds the observation and the sent action; after the stroke its root-logger lines go to
`logs/episode_NNNNNN.txt` and the episode is saved. The dataset files come from an era writer (`synth/era_writers.py`):
by default the current fork (LeRobot v3.0, metadata rewritten after every episode, no finalize), optionally the
v2.1-era fork or upstream lerobot 0.6.1. The tatbot side files come from `synth/side_files.py`. Deterministic per seed.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from tatbot_pipeline.recordings.naming import recording_dir_name
from tatbot_pipeline.robot.render import render_camera
from tatbot_pipeline.robot.spec import (  # noqa: F401 - CAMERAS and ROBOT_TYPE are part of what synth writes
    CAMERAS,
    FPS,
    JOINT_NAMES,
    READY_POSE,
    ROBOT_TYPE,
    arm_slice,
    dataset_features,
    scene_pose,
)
from tatbot_pipeline.synth.side_files import (
    actions_from_strokebatch,
    black_camera_log,
    dead_arm_log,
    make_strokebatch,
    make_strokes,
    scene_dict,
    stroke_png,
    stroke_yaml_dict,
    write_scene,
    write_strokes,
)
from tatbot_pipeline.synth.era_writers import WRITERS, DatasetWriter

log = logging.getLogger(__name__)

DESIGNS = ("tatbotlogo", "flower", "zorya", "snail")
FORMATS = tuple(WRITERS)  # "v3.0" (fork, current), "v2.1" (fork, before 2025-09-15), "lerobot" (upstream lerobot)
# When each era recorded: recordings get names (timestamps) from their era.
_ERA_START = {"v3.0": datetime(2025, 9, 20, 14, 31, 7), "v2.1": datetime(2025, 8, 9, 17, 2, 10),
              "lerobot": datetime(2025, 11, 3, 10, 0, 0)}
_ERA_16_JOINTS = datetime(2025, 7, 20, 11, 5, 0)  # strokebatches had 16 joints and dt before 2025-07-24
GOAL_TIME_FAST = 0.2  # the scene's arms.goal_time_fast (synth/side_files.py writes it): each action's goal time
ARM_MODELS = ("sim", "first_order")
_FIRST_ORDER_LAG = 0.6  # "first_order": the share of the remaining distance covered per tick


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. The defaults are what the robot node records today (fork v3.0, RealSense on, joystick on).

    `scene` is `scene.name` (the directory name uses it; tatbot's scene is usually "default"), `design` the
    design_name (default: cycles through DESIGNS). `saved_episodes` stops the session after that many strokes, as an
    interrupted (or still running) session leaves it; `resume_recording` appends the rest later.
    """

    recordings: int = 1
    episodes: int = 4
    stroke_length: int = 16
    offset_num: int = 6
    cameras: bool = True
    image_shape: tuple[int, int] = (480, 640)
    seed: int = 0
    scene: str = "default"
    design: str | None = None
    start: datetime | None = None  # default: a date inside the chosen era
    vcodec: str = "libsvtav1"
    format: str = "v3.0"
    strokebatch_joints: int = 14  # 16: the strokebatch layout before 2025-07-24 (with `dt`)
    # Strokes in which the operator moves a needle depth with the joystick; None = every third stroke from stroke 2.
    joystick_episodes: tuple[int, ...] | None = None
    frame_paths: bool = True  # drawn strokes carry a design frame image (copied as episode_NNNNNN/stroke_<l|r>.png)
    # How the observed joints follow the actions: "sim", the simulated arm's plant (robot/plant.py), or
    # "first_order", the synthetic arm before the sim calibration (60 % of the remaining distance per tick), with
    # which the fork fixtures (tests/fixtures) were recorded.
    arm: str = "sim"
    saved_episodes: int | None = None
    # Silent recorder failures (DESIGN.md §1): the left arm stops answering (its state reads as the sleep pose and the
    # fork logs warnings), realsense1 times out (black frames, a warning per frame), in the listed episodes.
    dead_arm_episodes: tuple[int, ...] = ()
    black_camera_episodes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.format not in WRITERS:
            raise ValueError(f"format {self.format!r}: use one of {FORMATS}")
        if self.arm not in ARM_MODELS:
            raise ValueError(f"arm {self.arm!r}: use one of {ARM_MODELS}")

    @property
    def started(self) -> datetime:
        if self.start is not None:
            return self.start
        return _ERA_16_JOINTS if self.strokebatch_joints == 16 else _ERA_START[self.format]

    @property
    def joystick(self) -> tuple[int, ...]:
        if self.joystick_episodes is not None:
            return self.joystick_episodes
        return tuple(range(2, self.episodes, 3))


def make_recordings(out_dir: Path, spec: SynthSpec, progress: bool = False) -> list[Path]:
    """Write `spec.recordings` recordings under `out_dir`; returns their paths."""
    from tqdm import tqdm

    # Seeds shift the start by hours, so recordings of different seeds get different names but stay in their era.
    at = [spec.started + timedelta(hours=spec.seed, minutes=7 * i, seconds=3 * i) for i in range(spec.recordings)]
    paths = [out_dir / recording_dir_name(spec.scene, t) for t in at]
    taken = [p for p in paths if p.exists() and any(p.iterdir())]
    if taken:  # checked up front so a refused run writes nothing at all
        raise FileExistsError(
            f"{taken[0]}: not empty — synth never overwrites a recording; pass an empty OUT_DIR or another --seed/--scene"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(spec.recordings), desc="synth recordings", unit="rec", disable=not progress):
        design = spec.design or DESIGNS[i % len(DESIGNS)]
        write_recording(paths[i], spec, design=design, seed=spec.seed * 1000 + i, at=at[i])
    return paths


def write_recording(path: Path, spec: SynthSpec, design: str, seed: int, at: datetime | None = None,
                    writer: type | None = None) -> Path:
    """One recording dir, as stroke_tool leaves it after the session (all strokes, or `spec.saved_episodes`)."""
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path}: not empty — synth never overwrites a recording; choose an empty dir")
    session = RecordingSession(path, spec, design, seed, at or spec.started, writer=writer)
    session.run(stop=spec.saved_episodes)
    return path


def resume_recording(path: Path, spec: SynthSpec, design: str, seed: int, at: datetime | None = None,
                     stop: int | None = None, writer: type | None = None) -> Path:
    """stroke_tool with `resume=true`: reopen the dataset and record the strokes after the last saved episode."""
    session = RecordingSession(path, spec, design, seed, at or spec.started, writer=writer, resume=True)
    session.run(stop=stop)
    return path


class RecordingSession:
    """stroke_tool's loop over one recording dir; the same strokes and offsets for a given seed, resumed or not."""

    def __init__(self, path: Path, spec: SynthSpec, design: str, seed: int, at: datetime,
                 writer: type | None = None, resume: bool = False) -> None:
        import datasets

        datasets.disable_progress_bars()  # one "Map" bar per episode drowns the demo's own progress
        self.path, self.spec, self.at = Path(path), spec, at
        rng = np.random.default_rng(seed)
        data_root = "/srv/tatbot-data" if spec.format == "v3.0" else "/nfs/tatbot"
        self.scene = scene_dict(spec.scene, design, spec.stroke_length, spec.offset_num,
                                list(CAMERAS) if spec.cameras else [], spec.image_shape, data_root)
        self.strokes = make_strokes(rng, spec.episodes, spec.stroke_length, self.scene["design_dir"], spec.frame_paths)
        self.batch = make_strokebatch(rng, spec.episodes, spec.stroke_length, spec.offset_num, spec.strokebatch_joints)
        self.offsets = joystick_offsets(rng, self.strokes, spec.stroke_length, spec.offset_num, spec.joystick)
        self.png_rng = np.random.default_rng(seed + 1)
        make_writer = writer or WRITERS[spec.format]
        # Dataset first: upstream LeRobotDataset.create insists on making the root dir itself.
        self.dataset: DatasetWriter = make_writer(self.path, dataset_features(spec.cameras, spec.image_shape), FPS,
                                                  ROBOT_TYPE, spec.vcodec, resume)
        if not resume:
            self._write_side_files()

    def _write_side_files(self) -> None:
        from safetensors.numpy import save_file

        self.path.mkdir(parents=True, exist_ok=True)  # stroke_tool makes the dir, then writes the scene into it
        write_scene(self.path / "scene.yaml", self.scene)
        write_strokes(self.path, self.strokes)
        save_file(self.batch, str(self.path / "strokebatch.safetensors"))
        (self.path / "logs").mkdir(exist_ok=True)

    def run(self, stop: int | None = None) -> None:
        end = len(self.strokes) if stop is None else min(stop, len(self.strokes))
        for ep in range(self.dataset.num_episodes, end):
            self.record(ep)
        self.dataset.close()

    def record(self, ep: int) -> None:
        """One stroke pair -> one episode, with its condition dir, frame images and log."""
        spec = self.spec
        left, right = self.strokes[ep]
        cond_dir = self.path / f"episode_{ep:06d}"
        cond_dir.mkdir(exist_ok=True)
        for side, stroke in (("l", left), ("r", right)):
            if stroke.frame_path is not None:
                stroke_png(self.png_rng).save(cond_dir / f"stroke_{side}.png")
        actions = actions_from_strokebatch(self.batch["joints"], ep, self.offsets[ep])
        states = follow(actions, spec.arm)
        if ep in spec.dead_arm_episodes:
            states[:, arm_slice("left")] = scene_pose(self.scene, "sleep")[arm_slice("left")]
        task = f"left: {left.description}, right: {right.description}"
        for t in range(spec.stroke_length):
            frame = {"action": actions[t], "observation.state": states[t], "task": task}
            if spec.cameras:
                for c, cam in enumerate(CAMERAS):
                    image = render_camera(states[t], spec.image_shape, c)
                    if c == 0 and ep in spec.black_camera_episodes:
                        image[:] = 0
                    frame[f"observation.images.{cam}"] = image
            self.dataset.add_frame(frame)
        (self.path / "logs" / f"episode_{ep:06d}.txt").write_text(self._episode_log(ep))
        self.dataset.save_episode(episode_cond={"stroke_l": stroke_yaml_dict(left, ep), "stroke_r": stroke_yaml_dict(right, ep)})

    def _episode_log(self, ep: int) -> str:
        at = self.at + timedelta(seconds=ep * (self.spec.stroke_length / FPS + 2))
        text = ""
        if ep in self.spec.dead_arm_episodes:
            text += dead_arm_log(at, "left", self.spec.stroke_length)
        if ep in self.spec.black_camera_episodes and self.spec.cameras:
            text += black_camera_log(at, CAMERAS[0], self.scene["cams"]["realsenses"][0]["serial_number"], self.spec.stroke_length)
        return text


def joystick_offsets(rng: np.random.Generator, strokes: list, length: int, offset_num: int,
                     moved: tuple[int, ...]) -> np.ndarray:
    """Depth offset index per stroke, pose step and arm (b, l, 2), as stroke_tool tracks them.

    Every index starts at `offset_num // 2`. The joystick (read before each pose step) moves the left index with its
    y axis and the right one with x, by one step, clamped to [0, offset_num). Ink-dip strokes move a separate pair of
    indices, and none resets between strokes, so a stroke starts wherever the previous one of its kind ended.
    """
    mid = offset_num // 2
    main, inkdip = [mid, mid], [mid, mid]
    out = np.empty((len(strokes), length, 2), dtype=np.int64)
    for i, pair in enumerate(strokes):
        moves = {}
        if i in moved:
            for t in sorted(rng.choice(np.arange(1, length), size=min(2, length - 1), replace=False)):
                moves[int(t)] = (int(rng.integers(0, 2)), int(rng.choice([-1, 1])))
        for t in range(length):
            if t in moves:
                arm, delta = moves[t]
                current = inkdip if pair[arm].is_inkdip else main
                current[arm] = max(0, min(current[arm] + delta, offset_num - 1))
            out[i, t] = [(inkdip if pair[a].is_inkdip else main)[a] for a in (0, 1)]
    return out


@functools.lru_cache(maxsize=1)
def _plant():
    from tatbot_pipeline.robot.plant import ArmPlant

    return ArmPlant()


def follow(actions: np.ndarray, arm: str = "sim") -> np.ndarray:
    """Observed joints: the simulated arm's own plant (robot/plant.py: trossen-arm-sim's servos, tatbot's tool) at
    rest at ready, sent each action as a `goal_time_fast` command and read just before each command, as the recorder
    reads hog. So the expert's recorded actions, replayed on the simulated controllers, draw the recorded stroke."""
    from tatbot_pipeline.robot.plant import replay_arms

    if arm == "sim":
        return replay_arms(_plant(), READY_POSE, actions, FPS, GOAL_TIME_FAST)
    states, state = np.empty_like(actions), READY_POSE.copy()
    for t, action in enumerate(actions):
        states[t] = state
        state = state + _FIRST_ORDER_LAG * (action - state)
    return states.astype(np.float32)


