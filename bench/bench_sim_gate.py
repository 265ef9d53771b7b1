"""The sim gate's resolution (issue 34): calibration of the simulated arms, then the gate judging known inputs.

1. `calibrate` on a split (`--split DIR`, e.g. the demo's `.tatbot/splits/latest`; default: a split made of two
   synthetic recordings, train and val): strokes, time, the control gap on the val strokes before and after the fit,
   and through the real-time controllers.
2. On the calibrated scene and the val strokes, with the default sim gate: the expert's own recorded actions (its tip
   deviation from its first replay, the noise floor), the expert biased on shoulder and elbow by growing amounts, and
   one step late. The resolution is the smallest bias the default gate fails.

Prints a table and one line: `sim calibration <N> strokes in <S> s, gap p95 <before> -> <after> mm; expert <X> mm,
noise floor <Y> mm, resolution <Z> rad`.

Run: .venv/bin/python bench/bench_sim_gate.py [--split DIR] [--strokes 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults

apply_offline_defaults()  # before anything imports lerobot

from tatbot_pipeline.evaluation.calibration import calibrate  # noqa: E402
from tatbot_pipeline.evaluation.sim import ExpertVariant, evaluate_expert_in_sim  # noqa: E402
from tatbot_pipeline.evaluation.sim_gate import SimGateLimits  # noqa: E402
from tatbot_pipeline.robot.sim_controllers import sim_controllers  # noqa: E402
from tatbot_pipeline.synth import SynthSpec, make_recordings  # noqa: E402

BIASES = (0.005, 0.01, 0.015, 0.02, 0.03)


def synthetic_split(root: Path) -> Path:
    """train and val: two synthetic recordings of the demo's shape (6 strokes of 8 steps each)."""
    split = root / "splits" / "synthetic"
    for side, seed in (("train", 1), ("val", 2)):
        [recording] = make_recordings(root / side, SynthSpec(recordings=1, episodes=6, stroke_length=8,
                                                             cameras=False, seed=seed))
        shutil.copytree(recording, split / side)
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--strokes", type=int, default=4, help="val strokes each gate evaluation runs")
    args = parser.parse_args()
    limits = SimGateLimits()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        split = args.split.resolve() if args.split else synthetic_split(root)
        cal = calibrate(split, root / "calibration", progress=lambda m: None)
        print(f"calibration: {cal.headline()} ({cal.fit_s:.0f} s)")
        rows = []
        with sim_controllers(root / "controllers", scenes={"left": Path(cal.scene), "right": Path(cal.scene)},
                             log_setpoints=True) as controllers:
            def judge(variant: ExpertVariant):
                result = evaluate_expert_in_sim(split / "val", root / f"judge-{len(rows)}", variant,
                                                episodes=args.strokes, limits=limits, controllers=controllers,
                                                progress=lambda m: None)
                worst = max(r.tip_error_p95_mm for r in result.records)
                rows.append((variant.describe(), result.tip_error_mm_p95, worst, result.noise_floor_mm,
                             "PASS" if result.passed else "REFUSED" if result.decision.refused else "FAIL"))
                return result

            expert = judge(ExpertVariant())
            caught = [b for b in BIASES if not judge(ExpertVariant(bias_rad=b)).passed]
            judge(ExpertVariant(delay_steps=1))
    print(f"\ndefault sim gate: {limits.tip_deviation_mm:g} mm per stroke, {limits.max_tip_error_p95_mm:g} mm p95; "
          f"{args.strokes} val strokes each")
    print(f"| input | tip p95 (mm) | worst stroke p95 (mm) | noise floor (mm) | gate |\n|---|---|---|---|---|")
    for name, p95, worst, floor, verdict in rows:
        print(f"| {name} | {p95:.2f} | {worst:.2f} | {floor:.2f} | {verdict} |")
    resolution = f"{min(caught):g}" if caught else f"> {max(BIASES):g}"
    confirmed = cal.confirmed.tip_p95_mm if cal.confirmed else float("nan")
    print(f"\nsim calibration {cal.train_strokes} strokes in {cal.fit_s:.0f} s, gap p95 {cal.gap_before.tip_p95_mm:.2f} "
          f"-> {cal.gap_after.tip_p95_mm:.2f} mm (through the controllers {confirmed:.2f} mm); expert "
          f"{expert.tip_error_mm_p95:.2f} mm, noise floor {expert.noise_floor_mm:.2f} mm, resolution {resolution} rad")


if __name__ == "__main__":
    main()
