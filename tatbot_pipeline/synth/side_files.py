"""The tatbot side of a synthetic recording: scene.yaml, strokes.yaml + arrays/, strokebatch.safetensors, logs.

Each writer follows the tatbot code that writes the real file (hu-po/tatbot, read 2026-11):
- scene.yaml: `Scene.to_yaml` dumps `model_dump()` minus the pose *values* with plain `yaml.dump` (keys sorted):
  poses appear only as names (`ready_pos_l_name: left/ready`), top-level Paths become plain strings, nested Paths
  and tuples keep their Python tags, and camera credentials/serials sit in the file.
- strokes.yaml: `StrokeList.to_yaml_with_arrays` saves each array to `arrays/stroke_<i>_<left|right>_<field>.npy`
  and lists `<field>_file` keys after the stroke's other fields (`sort_keys=False`).
- strokes themselves follow `gen/gcode.py: make_gcode_strokes`: stroke 0 dips the left needle while the right arm
  rests, then each arm alternates ink dip / drawn stroke, out of phase; only drawn strokes have a `frame_path`.
- episode logs: stroke_tool attaches a handler to the *root* logger with `"%(asctime)s %(levelname)s: %(message)s"`
  and tatbot's TIME_FORMAT; tatbot's own loggers do not propagate, so a clean stroke leaves an empty log and the
  lines that do appear come from the fork's Tatbot robot (`lerobot/robots/tatbot/tatbot.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PosixPath

import numpy as np
import yaml
from PIL import Image

from tatbot_pipeline.recordings.naming import TIME_FORMAT
from tatbot_pipeline.recordings.strokebatch import robot_joints
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER, JOINTS_PER_ARM, NUM_JOINTS, READY_POSE

CAMERA_PASSWORD = "tatbot-cam-pw-1"  # a credential the scrubber must keep out of reports (tests look for it)
ARMS_LR = ("left", "right")
# `Arms.offset_range` in metres spread over `offset_num` depth offsets; in joint space the synthetic offsets move
# j1/j2 by this much per step (the needle goes deeper or shallower).
OFFSET_STEP_RAD = 0.01


@dataclass
class Stroke:
    """One arm's stroke as tatbot's `Stroke` model holds it (arrays kept apart, as in strokes.yaml)."""

    description: str
    arm: str
    is_inkdip: bool = False
    is_rest: bool = False
    inkcap: str | None = None
    color: str | None = None
    gcode_text: str | None = None
    frame_path: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def make_strokes(rng: np.random.Generator, n: int, stroke_length: int, design_dir: str, frame_paths: bool) -> list[tuple[Stroke, Stroke]]:
    """`n` stroke pairs in the order make_gcode_strokes emits them."""
    inkcaps = {"left": ("inkcap_left_large", "true_blue"), "right": ("inkcap_right_large", "bright_red")}
    drawn = {"left": 0, "right": 0}
    pairs = []
    for i in range(n):
        pair = []
        for arm in ARMS_LR:
            cap, color = inkcaps[arm]
            phase = i if arm == "left" else i - 1  # the right arm starts one stroke later (at rest first)
            if phase < 0:
                pair.append(Stroke(f"{arm} arm at rest", arm, is_rest=True,
                                   arrays={"meter_coords": np.zeros((stroke_length, 3), np.float32)}))
            elif phase % 2 == 0:
                ee = rng.normal(0, 0.01, (stroke_length, 3)).astype(np.float32)
                pair.append(Stroke(f"{arm} arm inkdip into {cap} to fill with {color} ink", arm, is_inkdip=True,
                                   inkcap=cap, color=color, arrays={"ee_pos": ee}))
            else:
                idx = drawn[arm]
                drawn[arm] += 1
                meters = rng.normal(0, 0.01, (stroke_length, 3)).astype(np.float32)
                pixels = rng.integers(0, 512, (stroke_length, 2)).astype(np.float32)
                frame = f"{design_dir}/stroke_{color}_{arm}_{idx:04d}.png" if frame_paths else None
                pair.append(Stroke(f"{arm} arm stroke after inkdip in {cap}", arm, inkcap=cap, color=color,
                                   gcode_text=f"G0 X{meters[0, 0]:.3f} Y{meters[0, 1]:.3f}\nG1 Z-0.5\n", frame_path=frame,
                                   arrays={"meter_coords": meters, "pixel_coords": pixels}))
        pairs.append((pair[0], pair[1]))
    return pairs


_ARRAY_FIELDS = ("meter_coords", "pixel_coords", "ee_pos", "ee_rot", "normals")


def stroke_yaml_dict(stroke: Stroke, index: int) -> dict:
    """`Stroke.model_dump_for_yaml()`: the model's fields in declaration order, then the array file references."""
    doc = {"description": stroke.description, "arm": stroke.arm, "gcode_text": stroke.gcode_text,
           "frame_path": stroke.frame_path, "is_rest": stroke.is_rest, "is_inkdip": stroke.is_inkdip,
           "inkcap": stroke.inkcap, "color": stroke.color}
    for name in _ARRAY_FIELDS:
        if name in stroke.arrays:
            doc[f"{name}_file"] = f"arrays/stroke_{index}_{stroke.arm}_{name}.npy"
    return doc


def write_strokes(path: Path, strokes: list[tuple[Stroke, Stroke]]) -> None:
    """strokes.yaml and arrays/ exactly as `StrokeList.to_yaml_with_arrays` lays them out."""
    (path / "arrays").mkdir(exist_ok=True)
    doc = []
    for i, pair in enumerate(strokes):
        for stroke in pair:
            for name, values in stroke.arrays.items():
                np.save(path / "arrays" / f"stroke_{i}_{stroke.arm}_{name}.npy", values)
        doc.append([stroke_yaml_dict(s, i) for s in pair])
    (path / "strokes.yaml").write_text(yaml.dump({"strokes": doc}, default_flow_style=False, sort_keys=False))


def make_strokebatch(rng: np.random.Generator, b: int, length: int, offsets: int, joints: int = NUM_JOINTS) -> dict[str, np.ndarray]:
    """Joint paths from the ready pose, one per depth offset (offset k moves j1/j2 by `OFFSET_STEP_RAD`).

    A tattoo line is a few centimetres of needle travel: each joint moves at most ~0.1 rad over the stroke, well
    within the rollout's speed limit (1.5 rad/s), so a policy that learned the strokes is not clamped on the robot.

    joints=16 reproduces the strokebatches tatbot wrote before 2025-07-24: 8 URDF joints per arm (the 7 the arm
    takes plus the gripper's mimic carriage joint, always 0) and a `dt` tensor of goal times.
    """
    t = np.linspace(0.0, 1.0, length, dtype=np.float32)
    out = np.empty((b, length, offsets, NUM_JOINTS), dtype=np.float32)
    for i in range(b):
        amp = rng.uniform(0.02, 0.08, NUM_JOINTS).astype(np.float32)
        phase = rng.uniform(0, 2 * math.pi, NUM_JOINTS).astype(np.float32)
        path = READY_POSE + amp * (np.sin(2 * math.pi * t[:, None] + phase) - np.sin(phase))
        for k in range(offsets):
            depth = (k - (offsets - 1) / 2) * OFFSET_STEP_RAD
            out[i, :, k] = path
            out[i, :, k, [1, 8]] += depth
            out[i, :, k, [2, 9]] -= depth
    out[..., [6, 13]] = 0.04  # grippers stay open: the needle is mounted on them
    out = np.clip(out, JOINT_LOWER, JOINT_UPPER)
    ee = lambda n: rng.normal(0, 0.05, (b, length, offsets, n)).astype(np.float32)  # noqa: E731
    rot = np.zeros((b, length, offsets, 4), dtype=np.float32)
    rot[..., 0] = 1.0
    batch = {"ee_pos_l": ee(3), "ee_pos_r": ee(3), "ee_rot_l": rot, "ee_rot_r": rot.copy(), "joints": out}
    if joints == 16:
        carriage = np.zeros((b, length, offsets, 1), dtype=np.float32)
        batch["joints"] = np.concatenate([out[..., :JOINTS_PER_ARM], carriage, out[..., JOINTS_PER_ARM:], carriage], axis=-1)
        dt = np.full((b, length, offsets), 0.2, dtype=np.float32)  # goal_time_fast, slow at both ends
        dt[:, :2] = dt[:, -2:] = 1.8
        batch["dt"] = dt
    elif joints != NUM_JOINTS:
        raise ValueError(f"strokebatch joints must be {NUM_JOINTS} (current) or 16 (before 2025-07-24), not {joints}")
    return batch


def actions_from_strokebatch(joints: np.ndarray, stroke: int, offsets: np.ndarray) -> np.ndarray:
    """The 14 sent joints per step: `StrokeBatch.offset_joints` at each arm's offset, as the robot's action.

    A 16-joint batch goes through the fork's `_urdf_joints_to_action` of that time (`recordings.strokebatch`).
    """
    mapped = robot_joints(joints[stroke])  # (l, o, 14)
    steps = np.arange(len(offsets))
    return np.concatenate([mapped[steps, offsets[:, 0], :7], mapped[steps, offsets[:, 1], 7:]], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- scene.yaml

def _pose(xyz=(0.0, 0.0, 0.0), wxyz=(1.0, 0.0, 0.0, 0.0)) -> dict:
    f32 = lambda v: [float(np.float32(x)) for x in v]  # noqa: E731 - tatbot stores poses as float32 arrays
    return {"pos": {"xyz": f32(xyz)}, "rot": {"wxyz": f32(wxyz)}}


def scene_dict(name: str, design: str, stroke_length: int, offset_num: int, cameras: list[str],
               image_shape: tuple[int, int], data_root: str) -> dict:
    """`Scene.model_dump()` as `Scene.to_yaml` writes it (pose values excluded, top-level Paths as strings)."""
    home = PosixPath("/home/tatbot")
    inkcap = lambda cap, ink, rgb: {"depth_m": 0.014, "diameter_m": 0.014,  # noqa: E731
                                    "ink": {"name": ink, "rgb": tuple(rgb)}, "name": cap, "pose": _pose((0.1, 0.2, 0.0))}
    return {
        "arms": {
            "arm_l_config_filepath": home / "tatbot/config/trossen/arm_l.yaml",
            "arm_r_config_filepath": home / "tatbot/config/trossen/arm_r.yaml",
            "connection_timeout": 6.0, "ee_offset_l": {"xyz": [-0.0032, -0.0061, 0.0]},
            "ee_offset_r": {"xyz": [0.0004, 0.0118, 0.0053]},
            "ee_rot_l": {"wxyz": [float(np.float32(v)) for v in (0.7071, 0.0, 0.0, -0.7071)]},
            "ee_rot_r": {"wxyz": [float(np.float32(v)) for v in (0.7071, 0.0, 0.0, 0.7071)]},
            "goal_time_fast": 0.2, "goal_time_slow": 1.8, "hover_offset": {"xyz": [0.0, 0.0, 0.005]},
            "ip_address_l": "192.168.1.3", "ip_address_r": "192.168.1.2", "lasercross_len_mm": 60.0,
            "offset_num": offset_num, "offset_range": (-0.002, 0.002),
        },
        "calibrator_pose": _pose((0.05, 0.3, 0.0)),
        "cams": {
            "ipcameras": [{"extrinsics": _pose(), "fps": 5, "height": 1080, "intrinsics": _intrinsics(), "ip": "192.168.1.91",
                           "name": "camera1", "password": CAMERA_PASSWORD, "rtsp_port": 554,
                           "urdf_link_name": "camera1_optical_frame", "username": "admin", "width": 1920}],
            "realsenses": [{"extrinsics": _pose(), "fps": 30, "height": image_shape[0], "intrinsics": _intrinsics(),
                            "name": cam, "serial_number": f"23062{i}27039{i}", "urdf_link_name": f"{side}/realsense_depth_optical_frame",
                            "width": image_shape[1]} for i, (cam, side) in enumerate(zip(cameras, ARMS_LR))],
        },
        "design_dir": f"{data_root}/designs/{design}",  # a top-level Path: to_yaml stringifies it
        "design_name": design,
        "inks": {"inkcaps": (inkcap("inkcap_left_large", "true_blue", (0, 0, 255)),
                             inkcap("inkcap_right_large", "bright_red", (255, 0, 0)))},
        "lasercross_pose": _pose((0.0, 0.25, 0.0)),
        "name": name,
        "pen_names_l": ["true_blue"], "pen_names_r": ["bright_red"],
        "pens_config": {"bright_red": {"argb": -65536, "name": "bright_red"}, "true_blue": {"argb": -16776961, "name": "true_blue"}},
        "pens_config_name": "full",
        "ready_pos_l_name": "left/ready", "ready_pos_r_name": "right/ready",
        "skin": {"description": "100mm x 100mm square on sponge fake skin", "image_height_m": 0.1, "image_width_m": 0.1,
                 "plymesh_dir": PosixPath(f"{data_root}/3d/default"), "zone_depth_m": 0.1, "zone_height_m": 0.1, "zone_width_m": 0.1},
        "sleep_pos_l_name": "left/sleep", "sleep_pos_r_name": "right/sleep",
        "stroke_length": stroke_length,
        "tags": {"decision_margin": 20.0, "enabled_tags": (0, 1, 2, 6, 7), "family": "tag16h5", "size_m": 0.056},
        "urdf": {"cam_link_names": ("left/realsense_depth_optical_frame", "right/realsense_depth_optical_frame", "camera1_optical_frame"),
                 "calibrator_link_name": "palette_calibrator", "ee_link_names": ("left/tattoo_needle", "right/tattoo_needle"),
                 "ink_link_names": ("inkcap_left_large", "inkcap_right_large"), "lasercross_link_name": "lasercross",
                 "path": home / "tatbot/urdf/tatbot.urdf", "root_link_name": "root", "tag_link_names": ("tag0",)},
    }


def _intrinsics() -> dict:
    return {"aspect": 1.33, "aspect_depth": None, "fov": 1.544, "fov_depth": 1.571, "fx": 327.5, "fy": 433.54, "ppx": 325.1, "ppy": 238.7}


def write_scene(path: Path, scene: dict) -> None:
    """Plain `yaml.dump` (default Dumper, sorted keys): PosixPath and tuple values come out with Python tags."""
    path.write_text(yaml.dump(scene))


# ---------------------------------------------------------------------------------------------------------- logs

def log_line(at: datetime, level: str, message: str) -> str:
    """One record through stroke_tool's episode handler: `LOG_FORMAT` with `datefmt=TIME_FORMAT`."""
    return f"{at.strftime(TIME_FORMAT)} {level}: {message}\n"


def dead_arm_log(at: datetime, arm: str, frames: int) -> str:
    """What the fork's Tatbot logs when an arm stops answering mid-stroke (reads fall back to the home pose).

    Per step: `get_observation` reads the arm once, `send_action` reads it again for its responsiveness check and
    then fails to set it; the driver's message follows on its own lines (the records are multi-line).
    """
    err = "Failed to receive a response from the arm controller within the timeout"
    read = f"🦾❌ Failed to get {arm} arm positions:\n{err}"
    write = f"🦾❌ Failed to set {arm} arm positions: \n<class 'RuntimeError'>:\n{err}\nNone"
    return "".join(log_line(at, "WARNING", msg) for _ in range(frames) for msg in (read, read, write))


def black_camera_log(at: datetime, camera: str, serial: str, frames: int) -> str:
    """`Tatbot._read_frame` when a RealSense read times out: a warning, then a black frame is recorded."""
    msg = (f"❌🎥 Failed to read {camera}: Timed out waiting for frame from camera RealSenseCamera({serial}) after "
           "200 ms. Read thread alive: True.")
    return "".join(log_line(at, "WARNING", msg) for _ in range(frames))


def stroke_png(rng: np.random.Generator) -> Image.Image:
    """A stand-in for the design frame image gcode.py draws for a stroke."""
    img = np.full((64, 64, 3), 255, dtype=np.uint8)
    ys = rng.integers(8, 56, 2)
    img[ys[0] : ys[0] + 2, 8:56] = 0
    return Image.fromarray(img)
