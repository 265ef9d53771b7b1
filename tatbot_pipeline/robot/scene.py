"""The scene a rollout runs in: named poses, goal times, the task string and the hardware config.

A scene is named and resolved to `<scenes dir>/<name>.yaml` — the same scene.yaml tatbot writes next to every
recording, so a recording's scene can be copied there as is. Only the name "default" without a file falls back to a
built-in scene; any other unknown name is an error listing the scenes there are (a typo must never roll out on a
scene nobody chose). Every scene is validated before a robot is built: its poses are resolved by name through the
pose table (robot/spec.py), finite and within the URDF limits, and its goal times positive and finite.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tatbot_pipeline.scene_yaml import load_scene
from tatbot_pipeline.robot.guard import UnsafeCommand, check_command, check_goal_time
from tatbot_pipeline.robot.spec import ARMS, scene_pose

log = logging.getLogger(__name__)

DEFAULT_SCENE = "default"
# tatbot's Trossen defaults: fast for small continuous moves, slow for the big moves to ready/sleep.
GOAL_TIME_FAST = 0.2
GOAL_TIME_SLOW = 1.8
MAX_NAME_LENGTH = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SceneError(ValueError):
    """A scene that cannot be used: unknown, unreadable, or with values the robot must not be sent."""


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


def shown(text: str, limit: int = 80, quote: bool = True) -> str:
    """A user's string for an error message: cut to `limit` characters, repr'd when quoted or not printable (a NUL
    byte shows as \\x00 instead of vanishing)."""
    text = str(text)
    cut = text[:limit]
    body = repr(cut) if quote or not cut.isprintable() else cut
    return body if len(text) <= limit else f"{body}… ({len(text)} characters)"


def available_scenes(directory: Path) -> list[str]:
    names = sorted(p.stem for p in Path(directory).glob("*.yaml")) if Path(directory).is_dir() else []
    return sorted({DEFAULT_SCENE, *names})


def resolve_scene(name: str, directory: Path) -> RobotScene:
    """Load and validate `<directory>/<name>.yaml`; "default" without a file is the built-in scene."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise SceneError(f"scene name {shown(name)}: use up to {MAX_NAME_LENGTH} letters, digits, '_', '-' or '.' "
                         "(it names <scenes dir>/<name>.yaml)")
    path = Path(directory) / f"{name}.yaml"
    if path.is_file():
        try:
            data = load_scene(path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            log.error("scene %s: unreadable: %s", path, e)  # where stays in the node's log; the caller reads why
            raise SceneError(f"scene {shown(name)}: unreadable ({type(e).__name__}) — fix its file in the scenes "
                             "dir on the robot node (the node's log names it)") from None
        return scene_from_dict(name, data, source=path)
    if name == DEFAULT_SCENE:
        log.info("no %s; using the built-in default scene (tatbot's left/right ready and sleep poses)", path)
        return scene_from_dict(name, builtin_scene(name))
    log.warning("unknown scene %s: no %s", shown(name), path)
    raise SceneError(f"unknown scene {shown(name)}. Available scenes: {', '.join(available_scenes(directory))} — "
                     "copy a recording's scene.yaml to <name>.yaml in the robot node's scenes dir (TATBOT_SCENES_DIR) "
                     "to add one")


def builtin_scene(name: str = DEFAULT_SCENE) -> dict[str, Any]:
    """A scene.yaml-shaped dict as tatbot writes it (pose names, default goal times); no hardware addresses."""
    poses = {f"{which}_pos_{arm[0]}_name": f"{arm}/{which}" for which in ("ready", "sleep") for arm in ARMS}
    return {
        "name": name,
        "design_name": name,
        "arms": {"goal_time_fast": GOAL_TIME_FAST, "goal_time_slow": GOAL_TIME_SLOW},
        "cams": {"realsenses": []},
        **poses,
    }


def scene_from_dict(name: str, data: dict[str, Any], source: Path | None = None) -> RobotScene:
    """Every check a scene must pass before any robot is built from it; SceneError names the scene and the value
    (not its file: the message may go to a remote caller, the node's log has the path)."""
    where = f"scene {shown(name)}" if source is not None else "built-in scene"
    arms = data.get("arms") or {}
    if not isinstance(arms, dict):
        raise SceneError(f"{where}: 'arms' must be a mapping, got {type(arms).__name__}")
    design = data.get("design_name") or name
    # Recordings label episodes "left: <stroke>, right: <stroke>"; a scene may set its own `task`.
    task = str(data.get("task") or f"left: {design} stroke, right: {design} stroke")
    try:
        fast = check_goal_time(arms.get("goal_time_fast", GOAL_TIME_FAST), "arms.goal_time_fast")
        slow = check_goal_time(arms.get("goal_time_slow", GOAL_TIME_SLOW), "arms.goal_time_slow")
        ready, sleep = (_pose(data, which, slow) for which in ("ready", "sleep"))
    except (UnsafeCommand, ValueError) as e:
        raise SceneError(f"{where}: {e} — fix the scene before rolling out") from None
    return RobotScene(name=name, ready=ready, sleep=sleep, goal_time_fast=fast, goal_time_slow=slow, task=task,
                      data=data, source=source)


def _pose(data: dict[str, Any], which: str, goal_time: float) -> np.ndarray:
    """The scene's `which` pose, resolved by name, through the same guard every command passes."""
    pose = scene_pose(data, which)
    if pose is None:
        raise ValueError(f"no {which} pose: expected {which}_pos_l_name and {which}_pos_r_name (e.g. left/{which})")
    return check_command(pose, goal_time, f"{which} pose")
