"""What stroke_tool sent, reconstructed from strokebatch.safetensors: robot joints and per-arm depth-offset paths.

The recorded action of stroke i, arm a, pose step t is `joints[i, t, k_a(t), arm a]` where k_a is the arm's depth
offset index at that step. It starts at `offset_num // 2`; with the joystick (on by default) the operator moves it
one step up or down between pose steps, and ink-dip strokes keep an index of their own (hu-po/tatbot
`tools/robot/stroke.py`). So k_a is piecewise constant with ±1 steps, per arm, and need not start mid-range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tatbot_pipeline.robot.spec import NUM_JOINTS

# Before 2025-07-24 tatbot's IK produced 8 URDF joints per arm: the 7 the arm takes and the gripper's mimic
# carriage joint. The fork's `_urdf_joints_to_action` of that time (hu-po/lerobot 247550d) sent indices 0-6 and 8-14.
LEGACY_JOINTS = 16
LEGACY_TO_ROBOT = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]


def robot_joints(joints: np.ndarray) -> np.ndarray:
    """A strokebatch `joints` tensor (..., 14) or the pre-2025-07-24 (..., 16) as the 14 joints the robot was sent."""
    if joints.shape[-1] == NUM_JOINTS:
        return joints
    if joints.shape[-1] == LEGACY_JOINTS:
        return joints[..., LEGACY_TO_ROBOT]
    raise ValueError(f"strokebatch joints have {joints.shape[-1]} values per pose; tatbot wrote {NUM_JOINTS} (or {LEGACY_JOINTS} before 2025-07-24)")


@dataclass(frozen=True)
class OffsetPath:
    """How one arm's actions of one stroke line up with the strokebatch's depth offsets."""

    offsets: list[int | None]  # offset index per frame; None where no offset matches
    unmatched: list[int]  # frames whose action matches no offset
    jumps: list[tuple[int, int, int]]  # (frame, from, to) where the index moved by more than one step
    worst_error: float  # rad: at the worst unmatched frame, the distance to the closest offset

    @property
    def ok(self) -> bool:
        return not self.unmatched and not self.jumps

    def runs(self) -> list[list[int]]:
        """[[offset, first_frame], …]: the path as the joystick made it, for summaries."""
        out: list[list[int]] = []
        for t, k in enumerate(self.offsets):
            if k is not None and (not out or out[-1][0] != k):
                out.append([k, t])
        return out


def match_offsets(errors: np.ndarray, atol: float) -> OffsetPath:
    """Fewest-changes offset path through `errors` (frames x offsets: max |action - joints| of one arm).

    Each frame may use any offset within `atol`; consecutive frames may differ by at most one step. A frame with no
    matching offset, or one that no ±1 step reaches, ends a segment and starts the next, so only the offending frames
    are named. Offsets closer together than `atol` are ambiguous; the fewest-changes path resolves them.
    """
    ok = errors <= atol
    frames, n = ok.shape
    steady = np.flatnonzero(ok.all(axis=0))
    if len(steady):  # the common case: one offset explains the whole stroke (nobody touched the joystick)
        return OffsetPath([int(steady[0])] * frames, [], [], 0.0)
    offsets: list[int | None] = [None] * frames
    back = np.zeros((frames, n), dtype=np.int64)
    breaks: list[int] = []
    start: int | None = None
    cost = np.zeros(n)

    def close(end: int) -> None:  # backtrack the segment start..end from its cheapest final offset
        k = int(np.argmin(cost))
        for t in range(end, start - 1, -1):
            offsets[t] = k
            k = int(back[t, k])

    for t in range(frames):
        if not ok[t].any():
            if start is not None:
                close(t - 1)
            start = None
            continue
        if start is not None:
            steps = np.full((3, n), np.inf)
            steps[0] = cost
            steps[1, 1:] = cost[:-1] + 1  # offset k reached from k-1
            steps[2, :-1] = cost[1:] + 1  # ... from k+1
            new = np.where(ok[t], steps.min(axis=0), np.inf)
            if np.isfinite(new).any():
                back[t] = np.arange(n) + np.array([0, -1, 1])[steps.argmin(axis=0)]
                cost = new
                continue
            close(t - 1)
            breaks.append(t)
        start, cost, back[t] = t, np.where(ok[t], 0.0, np.inf), np.arange(n)
    if start is not None:
        close(frames - 1)
    unmatched = [t for t in range(frames) if offsets[t] is None]
    worst = float(max((errors[t].min() for t in unmatched), default=0.0))
    return OffsetPath(offsets, unmatched, [(t, offsets[t - 1], offsets[t]) for t in breaks], worst)
