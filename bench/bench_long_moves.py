"""Long moves from rest (issue 33): what the simulated arm controllers receive when the arms park after a policy step.

Part 1, the defect and its fix, on two trossen-arm-sim controllers that log every setpoint the unmodified
`trossen_arm` driver streams to them: `--cycles` times, ready -> one fast policy step (0.12 rad on left joint_3 and
joint_5 and right joint_0 in 0.2 s) -> park (ready, then home), once as the backend does it now (each arm held at its
setpoint and at rest before a long move) and once without that step (`TatbotRobot._come_to_rest` skipped: the
driver's own behaviour). Prints, per joint, the largest excursion of any long-move setpoint away from its goal.

Part 2, `--evaluations N` (default 20): N consecutive `evaluate_in_sim` runs on the fork fixtures' strokes (v3.0 and
v2.1) and, with `--val DIR` (e.g. the demo's `.tatbot/splits/latest/val`), on that split, with an untrained tiny
SmolVLA; counts the evaluations that ended with both arms parked and no collision stop outside the strokes (in an
approach or the park), and the largest wrong-way setpoint of any approach or park.

Run: .venv/bin/python bench/bench_long_moves.py [--cycles 3] [--evaluations 20] [--val DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from tatbot_pipeline.config import apply_offline_defaults

apply_offline_defaults()  # before anything imports lerobot

from tatbot_pipeline.evaluation.sim import evaluate_in_sim  # noqa: E402
from tatbot_pipeline.evaluation.sim_gate import SimGateLimits, outside_needle  # noqa: E402
from tatbot_pipeline.recordings.convert import converted_copy, needs_conversion  # noqa: E402
from tatbot_pipeline.robot.scene import builtin_scene, scene_from_dict  # noqa: E402
from tatbot_pipeline.robot.setpoints import wrong_way  # noqa: E402
from tatbot_pipeline.robot.sim_controllers import sim_controllers  # noqa: E402
from tatbot_pipeline.robot.spec import JOINT_NAMES  # noqa: E402
from tatbot_pipeline.robot.tatbot import TatbotRobot  # noqa: E402
from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = [next((REPO / "tests" / "fixtures" / "recordings" / era).glob("stroke-*"))
            for era in ("fork-v3.0", "fork-v2.1")]
STEP = {"left.joint_3.pos": 0.12, "left.joint_5.pos": 0.12, "right.joint_0.pos": -0.12}


@contextlib.contextmanager
def without_rest():
    """The backend as it was: long moves sent straight after whatever came before."""
    original = TatbotRobot._come_to_rest
    TatbotRobot._come_to_rest = lambda self, sides, each: {}
    try:
        yield
    finally:
        TatbotRobot._come_to_rest = original


def park_after_step(root: Path) -> np.ndarray:
    """One cycle on fresh logging controllers; the largest wrong-way setpoint per joint (14) over its long moves."""
    with sim_controllers(root, log_setpoints=True) as sims:
        data = builtin_scene("bench")
        data["arms"] = {**data.get("arms", {}), "ip_address_l": sims["left"].host, "ip_address_r": sims["right"].host,
                        "connection_timeout": 2.0}
        scene = scene_from_dict("bench", data)
        robot = TatbotRobot(scene, enable_realsense=False, camera_source="sim")
        robot.connect()
        try:
            robot.send(scene.ready, scene.goal_time_slow, blocking=True)
            step = scene.ready.astype(np.float64).copy()
            for name, delta in STEP.items():
                step[JOINT_NAMES.index(name)] += delta
            robot.send(step, scene.goal_time_fast)
            robot.return_to(scene.ready, scene.goal_time_slow)
        finally:
            robot.disconnect()
        for sim in sims.values():
            sim.stop()
        worst = np.zeros(len(JOINT_NAMES))
        for checked in wrong_way(robot.long_moves, {side: sim.setpoint_log for side, sim in sims.items()}):
            offset = 0 if checked["side"] == "left" else 7
            worst[offset:offset + 7] = np.maximum(worst[offset:offset + 7], checked["away_from_goal_rad"])
        return worst


def evaluations(root: Path, count: int, val: Path | None) -> str:
    # A v2.1 recording is judged through its v3.0 copy, as validation makes it (the pipeline never writes beside it).
    fixtures = [converted_copy(f, root / "converted").copy if needs_conversion(f) else f for f in FIXTURES]
    strokes = [*fixtures, *([val] if val else [])]
    checkpoints = {s: save_tiny_smolvla_checkpoint(root / f"ckpt-{i}" / "pretrained_model", s)
                   for i, s in enumerate(strokes)}
    limits = SimGateLimits()
    clean, touched, worst, started = 0, 0, 0.0, time.perf_counter()
    for n in range(count):
        source = strokes[n % len(strokes)]
        result = evaluate_in_sim(checkpoints[source], source, root / f"eval-{n}", episodes=8, progress=lambda m: None)
        parked = all(r.park_failure is None for r in result.records) and not result.ended_early
        outside = [c for r in result.records for c in r.contacts if c["phase"] != "stroke" and outside_needle(c, limits)
                   and c["peak_force_n"] > limits.max_contact_force_n]
        approach_stops = [r for r in result.records if r.stop_reason and r.steps == 0]
        move = result.worst_wrong_way
        worst = max(worst, move["worst_rad"] if move else 0.0)
        clean += parked and not approach_stops
        touched += bool(outside)
        contacts = "".join(f"; {c['side']} {c['body1']} on {c['body2']} {c['peak_force_n']:.1f} N during the "
                           f"{c['phase']}" for c in outside)
        print(f"evaluation {n + 1:2d} ({source.name[:40]}): {result.strokes} strokes, "
              f"{'parked' if parked else 'NOT PARKED: ' + str([r.park_failure for r in result.records])}, "
              f"{len(approach_stops)} approaches stopped, worst wrong-way {move['worst_rad'] if move else 0:.5f} rad"
              f"{contacts}", flush=True)
    return (f"{clean}/{count} evaluations parked with no collision stop outside the strokes ({touched} with a contact "
            f"above {limits.max_contact_force_n:g} N in an approach or the park), largest wrong-way setpoint "
            f"{worst:.5f} rad ({time.perf_counter() - started:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=20)
    parser.add_argument("--val", type=Path, default=None, help="a val split to evaluate too (the demo's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-long-moves-") as tmp:
        root = Path(tmp)
        with without_rest():
            before = np.max([park_after_step(root / f"before-{i}") for i in range(args.cycles)], axis=0)
        after = np.max([park_after_step(root / f"after-{i}") for i in range(args.cycles)], axis=0)
        print(f"{'joint':20s} {'before (rad)':>12s} {'after (rad)':>12s}")
        for name, b, a in zip(JOINT_NAMES, before, after):
            if not name.endswith("gripper.pos"):
                print(f"{name:20s} {b:12.4f} {a:12.5f}")
        summary = evaluations(root, args.evaluations, args.val) if args.evaluations else "no evaluations"
        print(summary)
        print(f"long moves: largest wrong-way setpoint {before.max():.4f} rad before -> {after.max():.5f} rad after "
              f"({args.cycles} cycles); {summary}")


if __name__ == "__main__":
    main()
