"""Sim-in-the-loop evaluation benchmark (issue 26): 8 held-out strokes of 16 steps, closed loop, controllers included.

Builds a synthetic recording (8 strokes of 16 steps, both cameras at the demo's 96×128) and the demo's tiny
untrained SmolVLA for it (untimed), then times `evaluate_in_sim` end to end: starting the two trossen-arm-sim
processes, loading the checkpoint, reading the held-out strokes, every stroke (approach to its first recorded state,
16 policy steps at 10 Hz through `run_loop` and the real driver, its LeRobot dataset, its plot), and stopping the
controllers. Budget: ≤ 90 s on 2 cores. The tip error is that of an untrained policy: the figure to watch is the time.

Run: .venv/bin/python bench/bench_sim_eval.py [--strokes 8] [--stroke-length 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults

apply_offline_defaults()  # before anything imports lerobot

from tatbot_pipeline.evaluation.sim import evaluate_in_sim  # noqa: E402
from tatbot_pipeline.synth import SynthSpec, make_recordings  # noqa: E402
from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=8)
    parser.add_argument("--stroke-length", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sim-eval-") as tmp:
        root = Path(tmp)
        [recording] = make_recordings(root / "recordings", SynthSpec(
            episodes=args.strokes, stroke_length=args.stroke_length, image_shape=(96, 128), seed=11))
        checkpoint = save_tiny_smolvla_checkpoint(root / "train" / "pretrained_model", recording)
        started = time.perf_counter()
        result = evaluate_in_sim(checkpoint, recording, root / "sim", episodes=args.strokes, progress=lambda m: None)
        seconds = time.perf_counter() - started
        for record in result.records:
            print(record.verdict(result.limits))
        print(result.decision.headline())
        print(f"inference mode {result.inference} (as vla_infer would pick for this checkpoint)")
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(f"sim evaluation {result.strokes} strokes in {seconds:.1f} s, tip error p95 {result.tip_error_mm_p95:.2f} mm")


if __name__ == "__main__":
    main()
