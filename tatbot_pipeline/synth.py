"""Synthetic stroke recordings, laid out exactly as tatbot's `stroke_tool` writes them (DESIGN.md §1).

The LeRobot part goes through `LeRobotDataset.create` / `add_frame` / `save_episode` / `finalize`, the same calls
stroke_tool makes, so the files are real LeRobot v3.0 datasets. Around it sit the tatbot side files: scene.yaml
(dumped with Python tags like tatbot's pydantic scene), strokes.yaml + arrays/*.npy, strokebatch.safetensors,
per-episode logs and the episode_NNNNNN/ condition dirs. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PosixPath

import numpy as np
import yaml
from PIL import Image

from tatbot_pipeline.recordings.naming import TIME_FORMAT, recording_dir_name
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, NUM_JOINTS, READY_POSE, SLEEP_POSE

log = logging.getLogger(__name__)

FPS = 10
ROBOT_TYPE = "tatbot"
CAMERAS = ("realsense1", "realsense2")
DESIGNS = ("tatbotlogo", "flower", "zorya", "snail")
_START = datetime(2025, 8, 9, 17, 2, 10)
# Fraction of the remaining distance a Trossen arm covers per 1/fps tick at goal_time_fast=0.2 s.
_ARM_LAG = 0.6


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. `image_shape` defaults to the RealSense stream tatbot records (480x640)."""

    recordings: int = 1
    episodes: int = 4
    stroke_length: int = 16
    offset_num: int = 6
    cameras: bool = False
    image_shape: tuple[int, int] = (480, 640)
    seed: int = 0
    scene: str | None = None  # default: cycles through DESIGNS
    start: datetime = _START
    vcodec: str = "libsvtav1"
    # Silent recorder failures to reproduce (DESIGN.md §1): a disconnected left arm reporting its sleep pose, and a
    # realsense1 camera delivering black frames, in the listed episodes.
    dead_arm_episodes: tuple[int, ...] = ()
    black_camera_episodes: tuple[int, ...] = ()


def dataset_features(cameras: bool, image_shape: tuple[int, int]) -> dict:
    """The LeRobot features stroke_tool derives from the tatbot robot via `hw_to_dataset_features`."""
    from lerobot.datasets.utils import hw_to_dataset_features

    joints = {name: float for name in JOINT_NAMES}
    observation = dict(joints)
    if cameras:
        observation.update({cam: (*image_shape, 3) for cam in CAMERAS})
    return {
        **hw_to_dataset_features(joints, "action", True),
        **hw_to_dataset_features(observation, "observation", True),
    }


def make_recordings(out_dir: Path, spec: SynthSpec, progress: bool = False) -> list[Path]:
    """Write `spec.recordings` recordings under `out_dir`; returns their paths."""
    from tqdm import tqdm

    names = [
        (spec.scene or DESIGNS[i % len(DESIGNS)], spec.start + timedelta(days=spec.seed, minutes=7 * i, seconds=3 * i))
        for i in range(spec.recordings)
    ]
    paths = [out_dir / recording_dir_name(design, at) for design, at in names]
    taken = [p for p in paths if p.exists() and any(p.iterdir())]
    if taken:  # checked up front so a refused run writes nothing at all
        raise FileExistsError(
            f"{taken[0]}: not empty — synth never overwrites a recording; pass an empty OUT_DIR or another --seed/--scene"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(spec.recordings), desc="synth recordings", unit="rec", disable=not progress):
        write_recording(paths[i], spec, design=names[i][0], seed=spec.seed * 1000 + i)
    return paths


def write_recording(path: Path, spec: SynthSpec, design: str, seed: int) -> Path:
    """One recording dir, as stroke_tool leaves it after a complete session."""
    import datasets
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    datasets.disable_progress_bars()  # one "Map" bar per episode drowns the demo's own progress
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path}: not empty — synth never overwrites a recording; choose an empty dir")
    if path.exists():
        path.rmdir()  # LeRobotDataset.create insists on creating the root itself
    rng = np.random.default_rng(seed)
    batch = _strokebatch(rng, spec.episodes, spec.stroke_length, spec.offset_num)
    offset = spec.offset_num // 2  # stroke_tool starts every arm at the middle depth offset
    strokes = _strokes(rng, spec.episodes, design)

    dataset = LeRobotDataset.create(
        f"tatbot/{path.name}",
        fps=FPS,
        root=path,
        robot_type=ROBOT_TYPE,
        features=dataset_features(spec.cameras, spec.image_shape),
        use_videos=True,
        vcodec=spec.vcodec,
    )
    _write_scene(path / "scene.yaml", design, spec)
    _write_strokes(path, strokes, batch)
    logs_dir = path / "logs"
    logs_dir.mkdir()
    clock = spec.start
    try:
        for ep, (left, right) in enumerate(strokes):
            cond_dir = path / f"episode_{ep:06d}"
            cond_dir.mkdir()
            for side, stroke in (("l", left), ("r", right)):
                _stroke_png(rng).save(cond_dir / f"stroke_{side}.png")
            actions = batch["joints"][ep, :, offset]
            states = _follow(actions)
            if ep in spec.dead_arm_episodes:
                states[:, :7] = SLEEP_POSE[:7]
            task = f"left: {left['description']}, right: {right['description']}"
            for t in range(spec.stroke_length):
                frame = {"action": actions[t], "observation.state": states[t], "task": task}
                if spec.cameras:
                    for c, cam in enumerate(CAMERAS):
                        image = render_camera(states[t], spec.image_shape, c)
                        if c == 0 and ep in spec.black_camera_episodes:
                            image[:] = 0
                        frame[f"observation.images.{cam}"] = image
                dataset.add_frame(frame)
            clock += timedelta(seconds=spec.stroke_length / FPS + 2)
            (logs_dir / f"episode_{ep:06d}.txt").write_text(_episode_log(clock, ep, spec, left, right))
            dataset.save_episode()
    finally:
        dataset.finalize()
    return path


def _strokebatch(rng: np.random.Generator, b: int, l: int, o: int) -> dict[str, np.ndarray]:
    """Joint paths from the ready pose; depth offsets move j1/j2 (needle deeper or shallower).

    A tattoo line is a few centimetres of needle travel: each joint moves at most ~0.1 rad over the stroke, well
    within the rollout's speed limit (1.5 rad/s), so a policy that learned the strokes is not clamped on the robot.
    """
    t = np.linspace(0.0, 1.0, l, dtype=np.float32)
    joints = np.empty((b, l, o, NUM_JOINTS), dtype=np.float32)
    for i in range(b):
        amp = rng.uniform(0.02, 0.08, NUM_JOINTS).astype(np.float32)
        phase = rng.uniform(0, 2 * math.pi, NUM_JOINTS).astype(np.float32)
        path = READY_POSE + amp * (np.sin(2 * math.pi * t[:, None] + phase) - np.sin(phase))
        for k in range(o):
            depth = (k - (o - 1) / 2) * 0.01
            joints[i, :, k] = path
            joints[i, :, k, [1, 8]] += depth
            joints[i, :, k, [2, 9]] -= depth
    joints[..., [6, 13]] = 0.04  # grippers stay open: the needle is mounted on them
    joints = np.clip(joints, JOINT_LOWER, JOINT_UPPER)
    ee = lambda n: rng.normal(0, 0.05, (b, l, o, n)).astype(np.float32)  # noqa: E731
    rot = np.zeros((b, l, o, 4), dtype=np.float32)
    rot[..., 0] = 1.0
    return {"joints": joints, "ee_pos_l": ee(3), "ee_pos_r": ee(3), "ee_rot_l": rot, "ee_rot_r": rot.copy()}


def _follow(actions: np.ndarray) -> np.ndarray:
    """Observed joints: a real arm is sampled before each command and lags it (first-order)."""
    states = np.empty_like(actions)
    state = READY_POSE.copy()
    for t, action in enumerate(actions):
        states[t] = state
        state = state + _ARM_LAG * (action - state)
    return states.astype(np.float32)


def render_camera(state: np.ndarray, shape: tuple[int, int], cam: int) -> np.ndarray:
    """A cheap but state-dependent image: skin-coloured background, a dark blob where the needle is."""
    h, w = shape
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = (200, 170, 150) if cam == 0 else (190, 160, 140)
    arm = state[:7] if cam == 0 else state[7:]
    cx = int((0.5 + 0.3 * math.sin(float(arm[0]) * 2)) * w)
    cy = int((0.5 + 0.3 * math.cos(float(arm[1]) * 2)) * h)
    r = max(2, min(h, w) // 12)
    img[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = (30, 30, 40)
    return img


def _strokes(rng: np.random.Generator, n: int, design: str) -> list[tuple[dict, dict]]:
    strokes = []
    for i in range(n):
        pair = []
        for arm in ("left", "right"):
            inkdip = bool(i % 4 == 0)
            desc = f"{'inkdip' if inkdip else design} stroke {i} ({arm})"
            pair.append({"description": desc, "arm": arm, "is_inkdip": inkdip, "color": "black",
                         "ee_pos": rng.normal(0, 0.02, (8, 3)).astype(np.float32)})
        strokes.append((pair[0], pair[1]))
    return strokes


def _write_strokes(path: Path, strokes: list[tuple[dict, dict]], batch: dict[str, np.ndarray]) -> None:
    """strokes.yaml references its large arrays as arrays/*.npy, like tatbot's StrokeList.to_yaml_with_arrays."""
    from safetensors.numpy import save_file

    arrays = path / "arrays"
    arrays.mkdir()
    doc = []
    for i, pair in enumerate(strokes):
        entry = []
        for stroke in pair:
            rel = f"arrays/stroke_{i:04d}_{stroke['arm'][0]}_ee_pos.npy"
            np.save(path / rel, stroke["ee_pos"])
            entry.append({**{k: v for k, v in stroke.items() if k != "ee_pos"}, "ee_pos": rel, "frame_path": None})
        doc.append(entry)
    (path / "strokes.yaml").write_text(yaml.safe_dump({"strokes": doc}, sort_keys=False))
    save_file(batch, str(path / "strokebatch.safetensors"))


def _write_scene(path: Path, design: str, spec: SynthSpec) -> None:
    """tatbot dumps its Scene with plain `yaml.dump`, so Paths and tuples carry Python tags."""
    def pose(values: np.ndarray) -> dict:
        return {"joints": tuple(float(v) for v in values)}

    scene = {
        "name": spec.scene or "default",
        "design_name": design,
        "design_dir": PosixPath(f"/nfs/tatbot/designs/{design}"),
        "stroke_length": spec.stroke_length,
        "arms": {
            "ip_address_l": "192.168.1.3",
            "ip_address_r": "192.168.1.2",
            "arm_l_config_filepath": PosixPath("/home/tatbot/config/trossen/arm_l.yaml"),
            "arm_r_config_filepath": PosixPath("/home/tatbot/config/trossen/arm_r.yaml"),
            "goal_time_fast": 0.2,
            "goal_time_slow": 1.8,
            "connection_timeout": 6.0,
            "offset_range": (-0.002, 0.002),
            "offset_num": spec.offset_num,
        },
        "cams": {
            "realsenses": [
                {"name": cam, "width": spec.image_shape[1], "height": spec.image_shape[0], "fps": 30,
                 "serial_number": f"23062{i}7{i}94{i}"} for i, cam in enumerate(CAMERAS)
            ] if spec.cameras else [],
            "ipcameras": [
                {"name": "camera1", "ip": "192.168.1.91", "username": "admin", "password": "tatbot-cam-pw-1",
                 "rtsp_port": 554, "fps": 5},
            ],
        },
        "ready_pos_l": pose(READY_POSE[:7]),
        "ready_pos_r": pose(READY_POSE[7:]),
        "sleep_pos_l": pose(SLEEP_POSE[:7]),
        "sleep_pos_r": pose(SLEEP_POSE[7:]),
    }
    path.write_text(yaml.dump(scene, sort_keys=False))


def _episode_log(clock: datetime, ep: int, spec: SynthSpec, left: dict, right: dict) -> str:
    stamp = clock.strftime(TIME_FORMAT)
    lines = [
        f"{stamp}|tools.stroke|INFO| 🖌️ Executing stroke {ep + 1}/{spec.episodes}: "
        f"left={left['description']}, right={right['description']}",
        f"{stamp}|tools.stroke|INFO| 🖌️ 🤖 recording path {ep} of {spec.episodes}",
        f"{stamp}|tools.stroke|INFO| 🖌️ 🗃️ Writing episode log to logs/episode_{ep:06d}.txt",
    ]
    return "\n".join(lines) + "\n"


def _stroke_png(rng: np.random.Generator) -> Image.Image:
    img = np.full((64, 64, 3), 255, dtype=np.uint8)
    ys = rng.integers(8, 56, 2)
    img[ys[0] : ys[0] + 2, 8:56] = 0
    return Image.fromarray(img)
