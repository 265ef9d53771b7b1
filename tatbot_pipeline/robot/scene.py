"""The scene a rollout runs in: named poses, goal times, the task string and the hardware config.

A scene is named (default "default") and resolved to `<scenes dir>/<name>.yaml` — the same scene.yaml tatbot
writes next to every recording, so a recording's scene can be copied there as is. When no file exists, a built-in
scene with the spec's ready/sleep poses is used, so the simulator always has something to run in.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tatbot_pipeline.recordings.scene import load_scene
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER, JOINTS_PER_ARM, READY_POSE, SLEEP_POSE

log = logging.getLogger(__name__)

DEFAULT_SCENE = "default"
# tatbot's Trossen defaults: fast for small continuous moves, slow for the big moves to ready/sleep.
GOAL_TIME_FAST = 0.2
GOAL_TIME_SLOW = 1.8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RobotScene:
    name: str
    ready: np.ndarray
    sleep: np.ndarray
    goal_time_fast: float
    goal_time_slow: float
    task: str
    data: dict[str, Any] = field(repr=False)  # the scene.yaml as loaded (scrub before logging it)
    source: Path | None = None  # None: built-in scene

    @property
    def arms(self) -> dict[str, Any]:
        return self.data.get("arms") or {}

    @property
    def realsenses(self) -> list[dict[str, Any]]:
        return list((self.data.get("cams") or {}).get("realsenses") or [])


def scenes_dir(home: Path) -> Path:
    """Where named scenes live: $TATBOT_SCENES_DIR, else <pipeline home>/scenes."""
    return Path(os.environ.get("TATBOT_SCENES_DIR") or Path(home) / "scenes")


def resolve_scene(name: str, directory: Path) -> RobotScene:
    """Load `<directory>/<name>.yaml`, or the built-in scene when there is none."""
    if not _NAME_RE.match(name):
        raise ValueError(f"scene name {name!r}: use letters, digits, '_', '-' or '.' (it names <scenes dir>/<name>.yaml)")
    path = Path(directory) / f"{name}.yaml"
    if path.is_file():
        return scene_from_dict(name, load_scene(path), source=path)
    log.info("no %s; using the built-in scene (spec ready/sleep poses)", path)
    return scene_from_dict(name, builtin_scene(name))


def builtin_scene(name: str = DEFAULT_SCENE) -> dict[str, Any]:
    """A scene.yaml-shaped dict with the spec poses and tatbot's default goal times; no hardware addresses."""
    def pose(values: np.ndarray) -> dict[str, list[float]]:
        return {"joints": [round(float(v), 6) for v in values]}

    return {
        "name": name,
        "design_name": name,
        "arms": {"goal_time_fast": GOAL_TIME_FAST, "goal_time_slow": GOAL_TIME_SLOW},
        "cams": {"realsenses": []},
        "ready_pos_l": pose(READY_POSE[:JOINTS_PER_ARM]),
        "ready_pos_r": pose(READY_POSE[JOINTS_PER_ARM:]),
        "sleep_pos_l": pose(SLEEP_POSE[:JOINTS_PER_ARM]),
        "sleep_pos_r": pose(SLEEP_POSE[JOINTS_PER_ARM:]),
    }


def scene_from_dict(name: str, data: dict[str, Any], source: Path | None = None) -> RobotScene:
    where = source or "built-in scene"
    arms = data.get("arms") or {}
    design = data.get("design_name") or name
    # Recordings label episodes "left: <stroke>, right: <stroke>"; a scene may set its own `task`.
    task = str(data.get("task") or f"left: {design} stroke, right: {design} stroke")
    return RobotScene(
        name=name,
        ready=_pose(data, "ready", READY_POSE, where),
        sleep=_pose(data, "sleep", SLEEP_POSE, where),
        goal_time_fast=float(arms.get("goal_time_fast", GOAL_TIME_FAST)),
        goal_time_slow=float(arms.get("goal_time_slow", GOAL_TIME_SLOW)),
        task=task,
        data=data,
        source=source,
    )


def _pose(data: dict[str, Any], which: str, default: np.ndarray, where: object) -> np.ndarray:
    """Both arms' `<which>_pos_l/r.joints`; a pose outside the URDF limits is refused, not clamped."""
    halves = []
    for side, part in (("l", default[:JOINTS_PER_ARM]), ("r", default[JOINTS_PER_ARM:])):
        entry = data.get(f"{which}_pos_{side}")
        joints = entry.get("joints") if isinstance(entry, dict) else None
        if joints is None:
            halves.append(part)
            continue
        if len(joints) != JOINTS_PER_ARM:
            raise ValueError(f"{where}: {which}_pos_{side}.joints has {len(joints)} values, expected {JOINTS_PER_ARM}")
        halves.append(np.asarray(joints, dtype=np.float32))
    pose = np.concatenate(halves).astype(np.float32)
    tol = 1e-4
    if (pose < JOINT_LOWER - tol).any() or (pose > JOINT_UPPER + tol).any():
        raise ValueError(f"{where}: {which} pose {pose.tolist()} is outside the URDF joint limits — fix the scene")
    return np.clip(pose, JOINT_LOWER, JOINT_UPPER)
