"""The wrong-way measure on setpoint streams made by hand: a quintic from rest, and one that starts with a velocity."""

from __future__ import annotations

import numpy as np

from tatbot_pipeline.robot.setpoints import LongMove, Setpoints, away_from_goal, wrong_way


def quintic(start: float, goal: float, v0: float, duration: float, t: np.ndarray) -> np.ndarray:
    """Position of a quintic from (start, v0, 0) to (goal, 0, 0) over `duration`: what the driver interpolates."""
    d, T = goal - start, duration
    c3 = (10 * d - 6 * v0 * T) / T**3
    c4 = (-15 * d + 8 * v0 * T) / T**4
    c5 = (6 * d - 3 * v0 * T) / T**5
    return start + v0 * t + c3 * t**3 + c4 * t**4 + c5 * t**5


def stream(v0: float) -> Setpoints:
    t = np.linspace(0.0, 1.8, 901)
    positions = np.zeros((t.size, 7))
    positions[:, 3] = quintic(0.12, 0.0, v0, 1.8, t)  # joint_3 back from a 0.12 rad policy step
    return Setpoints(100.0 + t, positions)


def test_a_quintic_from_rest_never_heads_away_from_its_goal():
    assert away_from_goal(stream(0.0), np.zeros(7)).max() < 1e-12


def test_a_quintic_that_inherits_a_policy_steps_velocity_is_caught_on_its_joint():
    # The step moved joint_3 by +0.12 rad in 0.2 s (0.6 rad/s); the park back starts with that velocity.
    away = away_from_goal(stream(0.6), np.zeros(7))
    assert away[3] > 0.05 and np.delete(away, 3).max() == 0.0


def test_between_starts_with_the_setpoint_holding_at_the_start():
    log = Setpoints(np.array([1.0, 2.0, 3.0]), np.arange(21, dtype=float).reshape(3, 7))
    window = log.between(2.5, 3.0)
    assert window.times.tolist() == [2.0, 3.0]  # the one received at 2.0 still held at 2.5


def test_wrong_way_names_the_move_the_arm_and_the_worst_joint(tmp_path):
    log = stream(0.6)
    records = np.column_stack([log.times, log.positions])
    records.astype(np.float64).tofile(tmp_path / "left.bin")
    move = LongMove("return to ready", ("left", "right"), 100.0, 1.8, np.zeros(14))
    [checked] = wrong_way([move], {"left": tmp_path / "left.bin", "right": tmp_path / "missing.bin"})
    assert checked["what"] == "return to ready" and checked["side"] == "left"
    assert checked["worst"] == "left.joint_3.pos" and checked["worst_rad"] > 0.05
