"""Camera frames for the simulated robot and arm-only hardware-in-the-loop runs: cheap, but state-dependent.

The synthetic recordings are drawn with the same renderer, so a policy trained on them sees the same kind of image
in the sim or through the real arm driver with `TATBOT_CAMERA_SOURCE=sim`.
"""

from __future__ import annotations

import math

import numpy as np


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
