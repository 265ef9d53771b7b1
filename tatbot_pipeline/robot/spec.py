"""Joint layout, URDF limits and named poses of the two-arm tatbot (Trossen WidowX AI arms).

Everything that reads or writes joint vectors (synthetic recordings, validation, the safety envelope)
takes them from here, so the 14-joint layout exists in one place.
"""

from __future__ import annotations

import math

import numpy as np

ARMS = ("left", "right")
JOINTS_PER_ARM = 7  # joint_0 .. joint_5 + gripper
NUM_JOINTS = 2 * JOINTS_PER_ARM

JOINT_NAMES: list[str] = [
    f"{arm}.{joint}.pos"
    for arm in ARMS
    for joint in [f"joint_{i}" for i in range(6)] + ["gripper"]
]

_LOWER_ARM = [-3.0543, 0.0, 0.0, -1.5708, -1.5708, -math.pi, 0.0]
_UPPER_ARM = [3.0543, math.pi, 2.3562, 1.5708, 1.5708, math.pi, 0.04]
JOINT_LOWER = np.array(_LOWER_ARM * 2, dtype=np.float32)
JOINT_UPPER = np.array(_UPPER_ARM * 2, dtype=np.float32)

_READY_L = [-0.333, 0.639, 0.667, -1.034, 0.541, 2.240, 0.04]
# The right arm mirrors the left one: j0, j4 and j5 change sign.
_READY_R = [-v if i in (0, 4, 5) else v for i, v in enumerate(_READY_L)]
READY_POSE = np.array(_READY_L + _READY_R, dtype=np.float32)
SLEEP_POSE = np.array([-0.66, 0, 0, 0, 0, 1.0, 0] + [0.66, 0, 0, 0, 0, -1.0, 0], dtype=np.float32)


def arm_slice(arm: str) -> slice:
    """Index range of one arm's joints in a 14-vector."""
    i = ARMS.index(arm)
    return slice(i * JOINTS_PER_ARM, (i + 1) * JOINTS_PER_ARM)
