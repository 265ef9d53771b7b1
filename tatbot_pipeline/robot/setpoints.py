"""What an arm controller received: the setpoints a simulated controller logged (robot/armsim.py `--setpoint-log`).

The `trossen_arm` driver turns each command into a setpoint every cycle (a linear segment for goal times up to 0.2 s,
a quintic above) and the controller follows those setpoints, not the command. A quintic starts with the velocity the
driver last interpolated, even when that segment ended long ago, so a long move right after a short policy step
first heads away from its goal. `away_from_goal` measures exactly that, on what the controller saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tatbot_pipeline.robot.spec import JOINTS_PER_ARM, arm_slice

# rad. A long move starts from rest, so its quintic only ever approaches the goal: 0 in exact arithmetic. The wire
# carries float32 setpoints (1e-7 rad apart near 3 rad); this bound is far above that and far below the 0.02-0.1 rad
# a move that inherits a policy step's velocity swings the wrong way (about 0.3 mm at the needle, 0.3 m out).
WRONG_WAY_TOLERANCE_RAD = 1e-3


@dataclass(frozen=True)
class LongMove:
    """A blocking move as a backend sent it, so that what the controllers received can be checked against it."""

    what: str  # "home pose on connect", "return to ready", ...
    sides: tuple[str, ...]
    started: float  # time.monotonic() as the first arm's command went out
    goal_time: float
    target: np.ndarray  # (14,)


@dataclass(frozen=True)
class Setpoints:
    """One arm's setpoints in arrival order: only changes are logged, so each holds until the next."""

    times: np.ndarray  # (n,) CLOCK_MONOTONIC seconds, the clock time.monotonic() reads in every process
    positions: np.ndarray  # (n, 7) rad (the gripper in m)

    @classmethod
    def read(cls, path: Path) -> "Setpoints":
        records = np.fromfile(path, dtype=np.float64).reshape(-1, 1 + JOINTS_PER_ARM)
        return cls(records[:, 0], records[:, 1:])

    def between(self, start: float, end: float) -> "Setpoints":
        """The setpoints in force from `start` to `end`: the one holding at `start`, then every one received up to
        `end`."""
        first = max(int(np.searchsorted(self.times, start, side="right")) - 1, 0)
        last = int(np.searchsorted(self.times, end, side="right"))
        return Setpoints(self.times[first:last], self.positions[first:last])


def away_from_goal(setpoints: Setpoints, goal: np.ndarray) -> np.ndarray:
    """Per joint (7 values, rad): the most any setpoint moved away from `goal` after having been closer to it.

    0 for a move that only ever approaches its goal, as a quintic from rest does; a move that starts the wrong way,
    or overshoots and comes back, scores the size of that excursion."""
    if not len(setpoints.times):
        return np.zeros(JOINTS_PER_ARM)
    distance = np.abs(setpoints.positions - np.asarray(goal, dtype=np.float64)[:JOINTS_PER_ARM])
    return (distance - np.minimum.accumulate(distance, axis=0)).max(axis=0)


def wrong_way(moves: list[LongMove], logs: dict[str, Path]) -> list[dict]:
    """For each long move and arm whose controller logged its setpoints: how far, per joint, the setpoints went away
    from the move's goal (`away_from_goal`), with the worst joint named."""
    received = {side: Setpoints.read(path) for side, path in logs.items() if Path(path).is_file()}
    checked = []
    for move in moves:
        for side in (s for s in move.sides if s in received):
            away = away_from_goal(received[side].between(move.started, move.started + move.goal_time),
                                  move.target[arm_slice(side)])
            worst = int(np.argmax(away[:-1]))  # revolute joints; the gripper is not a position to swing
            checked.append({"what": move.what, "side": side, "goal_time": move.goal_time,
                            "away_from_goal_rad": [round(float(v), 5) for v in away],
                            "worst": f"{side}.joint_{worst}.pos", "worst_rad": round(float(away[worst]), 5)})
    return checked
