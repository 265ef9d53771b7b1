"""The tatbot's schema: joint layout, URDF limits, named poses, cameras and the LeRobot features its recorder writes.

Everything that reads or writes joint vectors or recordings (the recorder's twin in synth, validation, the safety
envelope, the sim, the eval recorder) takes them from here, so each fact exists in one place. A leaf module: it
imports nothing of the project.
"""

from __future__ import annotations

import math

import numpy as np

ROBOT_TYPE = "tatbot"  # info.json robot_type of every recording
FPS = 10  # stroke_tool's default control and recording rate
CAMERAS = ("realsense1", "realsense2")  # observation.images.<cam>, in the order tatbot's scene lists them
ARMS = ("left", "right")
JOINTS_PER_ARM = 7  # joint_0 .. joint_5 + gripper
NUM_JOINTS = 2 * JOINTS_PER_ARM

JOINT_NAMES: list[str] = [
    f"{arm}.{joint}.pos"
    for arm in ARMS
    for joint in [f"joint_{i}" for i in range(6)] + ["gripper"]
]

# Limits are compared with a tolerance: a command may be 1e-4 rad past a limit (scenes and the URDF round 3π/4
# differently) and is clipped; recorded positions may be 1e-3 rad past one (the firmware reports a hair beyond a stop).
COMMAND_LIMIT_TOLERANCE = 1e-4
RECORDED_LIMIT_TOLERANCE = 1e-3

_LOWER_ARM = [-3.0543, 0.0, 0.0, -1.5708, -1.5708, -math.pi, 0.0]
_UPPER_ARM = [3.0543, math.pi, 2.3562, 1.5708, 1.5708, math.pi, 0.04]
JOINT_LOWER = np.array(_LOWER_ARM * 2, dtype=np.float32)
JOINT_UPPER = np.array(_UPPER_ARM * 2, dtype=np.float32)

_READY_L = [-0.333, 0.639, 0.667, -1.034, 0.541, 2.240, 0.04]
# The right arm mirrors the left one: j0, j4 and j5 change sign.
_READY_R = [-v if i in (0, 4, 5) else v for i, v in enumerate(_READY_L)]
READY_POSE = np.array(_READY_L + _READY_R, dtype=np.float32)
SLEEP_POSE = np.array([-0.66, 0, 0, 0, 0, 1.0, 0] + [0.66, 0, 0, 0, 0, -1.0, 0], dtype=np.float32)


def dataset_features(cameras: bool, image_shape: tuple[int, int]) -> dict:
    """The LeRobot features stroke_tool derives from the tatbot robot via `hw_to_dataset_features`."""
    from lerobot.utils.feature_utils import hw_to_dataset_features

    joints = {name: float for name in JOINT_NAMES}
    observation = dict(joints)
    if cameras:
        observation.update({cam: (*image_shape, 3) for cam in CAMERAS})
    return {
        **hw_to_dataset_features(joints, "action", True),
        **hw_to_dataset_features(observation, "observation", True),
    }


def arm_slice(arm: str) -> slice:
    """Index range of one arm's joints in a 14-vector."""
    i = ARMS.index(arm)
    return slice(i * JOINTS_PER_ARM, (i + 1) * JOINTS_PER_ARM)


# tatbot's named arm poses (src/conf/poses/<arm>/<pose>.yaml in hu-po/tatbot). scene.yaml refers to them by name
# (`ready_pos_l_name: left/ready`) and never stores their values, so every reader resolves names through this table.
NAMED_POSES: dict[str, np.ndarray] = {
    "left/ready": READY_POSE[:JOINTS_PER_ARM].copy(),
    "right/ready": READY_POSE[JOINTS_PER_ARM:].copy(),
    "left/sleep": SLEEP_POSE[:JOINTS_PER_ARM].copy(),
    "right/sleep": SLEEP_POSE[JOINTS_PER_ARM:].copy(),
}
_SIDES = {"l": "left", "r": "right"}


class UnknownPose(ValueError):
    """A scene names a pose this table does not know: never replaced by a default."""


def named_pose(name: str) -> np.ndarray:
    """One arm's 7 joint values for a tatbot pose name such as `left/ready`."""
    try:
        return NAMED_POSES[str(name)].copy()
    except KeyError:
        raise UnknownPose(
            f"unknown pose name {name!r}: known poses are {sorted(NAMED_POSES)} — add its values from tatbot's "
            "src/conf/poses/<arm>/<pose>.yaml to NAMED_POSES in tatbot_pipeline/robot/spec.py"
        ) from None


def scene_pose(scene: dict, which: str) -> np.ndarray | None:
    """The 14-joint `which` pose ('ready' or 'sleep') of a scene.yaml dict, None when the scene gives neither arm.

    Each arm comes from `<which>_pos_<l|r>_name` (what tatbot writes) or an explicit `<which>_pos_<l|r>: {joints}`;
    a scene giving both for one arm must agree, and a scene giving only one arm is an error (no half-default pose).
    Limits are not checked here: callers decide whether an out-of-range pose is a finding or a refusal.
    """
    halves: list[np.ndarray | None] = []
    for side, arm in _SIDES.items():
        key = f"{which}_pos_{side}"
        name = scene.get(f"{key}_name")
        entry = scene.get(key)
        values = entry.get("joints") if isinstance(entry, dict) else None
        by_name = named_pose(name) if name is not None else None
        by_value = None
        if values is not None:
            try:
                by_value = np.asarray(values, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{key}.joints is not a list of numbers: {values!r}") from None
            if by_value.shape != (JOINTS_PER_ARM,):
                raise ValueError(f"{key}.joints has {by_value.size} values, expected {JOINTS_PER_ARM} ({arm} arm)")
        if by_name is not None and by_value is not None and not np.allclose(by_name, by_value, atol=1e-4):
            raise ValueError(f"{key}_name {name!r} and {key}.joints disagree: {by_name.tolist()} vs {by_value.tolist()}")
        halves.append(by_name if by_name is not None else by_value)
    if all(h is None for h in halves):
        return None
    if any(h is None for h in halves):
        missing = [f"{which}_pos_{s}" for s, h in zip(_SIDES, halves) if h is None]
        raise ValueError(f"the scene gives the {which} pose of one arm only: {missing} missing")
    return np.concatenate(halves).astype(np.float32)
