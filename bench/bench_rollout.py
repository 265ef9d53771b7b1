"""Rollout loop benchmark (issue 8): does `vla_infer` keep time at 10 Hz, and what does it cost beyond the policy?

Runs the real `vla_infer` on the sim robot with a tiny untrained policy (SmolVLA with the offline backbone, and
ACT) and measures, per control step:
- period jitter: |time between consecutive step starts - 1/fps| (p50, p99, max): how well the loop keeps its
  10 Hz schedule. Target p99 <= 5 ms. Also the same at the end of each step (after send): the command times
  additionally move with the policy's compute time, which is long at an action-chunk boundary.
- loop overhead beyond `select_action`: the step's busy time (observe -> policy -> envelope -> send -> record) minus
  the time spent inside `policy.select_action`. Target <= 2 ms/step. Rendering the two sim cameras and LeRobot's
  tensor conversion and processors count as overhead here; they are part of what the loop does every step.

Run: .venv/bin/python bench/bench_rollout.py [--steps 150] [--fps 10] [--policies smolvla act] [--record-eval]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tatbot_pipeline  # noqa: F401  (offline env)
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference import policy as policy_module
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.synth import SynthSpec, make_recordings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.inference.checkpoints import save_tiny_act_checkpoint  # noqa: E402


class Timeline:
    """Timestamps the loop's step boundaries from the outside: robot.observe() starts a step, progress ends it."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.policy_s: dict[int, float] = {}  # step index -> seconds inside select_action during that step

    def factory(self, scene, cameras, enable_realsense):
        robot = SimRobot(cameras=cameras, start=scene.sleep)
        observe = robot.observe

        def timed_observe():
            self.starts.append(time.perf_counter())
            return observe()

        robot.observe = timed_observe
        return robot

    def progress(self, fraction: float, message: str) -> None:
        if message.startswith("step "):
            self.ends.append(time.perf_counter())


def instrument_select_action(timeline: Timeline):
    """Wrap load_policy so every select_action call of the loaded policy is timed."""
    original = policy_module.load_policy

    def load(*args, **kwargs):
        loaded = original(*args, **kwargs)
        select = loaded.policy.select_action

        @functools.wraps(select)
        def timed(batch, *a, **kw):
            t0 = time.perf_counter()
            try:
                return select(batch, *a, **kw)
            finally:
                step = len(timeline.starts) - 1  # -1: the warm-up pass before the loop, not a control step
                timeline.policy_s[step] = timeline.policy_s.get(step, 0.0) + time.perf_counter() - t0

        loaded.policy.select_action = timed
        return loaded

    return load


def run(name: str, checkpoint: Path, home: Path, steps: int, fps: int, record_eval: bool) -> dict:
    import tatbot_pipeline.inference.rollout as rollout

    timeline = Timeline()
    rollout.load_policy = instrument_select_action(timeline)
    try:
        request = VLAInferInput(policy=name, checkpoint_path=str(checkpoint), device="cpu", max_steps=steps, fps=fps,
                                record_eval=record_eval)
        out = vla_infer(request, PipelineSettings(home=home), factory=timeline.factory, progress=timeline.progress)
    finally:
        rollout.load_policy = policy_module.load_policy
    if not out.success:
        raise SystemExit(f"{name}: rollout failed: {out.message}")
    ends = np.array(timeline.ends)
    starts = np.array(timeline.starts[: len(ends)])
    jitter_ms = np.abs(np.diff(starts) - 1.0 / fps) * 1e3
    send_jitter_ms = np.abs(np.diff(ends) - 1.0 / fps) * 1e3
    busy_ms = (ends - starts) * 1e3
    policy_ms = np.array([timeline.policy_s.get(i, 0.0) for i in range(len(ends))]) * 1e3
    overhead_ms = busy_ms - policy_ms
    return {
        "policy": name, "steps": out.num_steps,
        "jitter_p50": np.percentile(jitter_ms, 50), "jitter_p99": np.percentile(jitter_ms, 99), "jitter_max": jitter_ms.max(),
        "send_jitter_p50": np.percentile(send_jitter_ms, 50), "send_jitter_p99": np.percentile(send_jitter_ms, 99),
        "select_action_mean": policy_ms.mean(), "select_action_p99": np.percentile(policy_ms, 99),
        "overhead_p50": np.percentile(overhead_ms, 50), "overhead_mean": overhead_ms.mean(),
        "overhead_p99": np.percentile(overhead_ms, 99),
        "slowest_steps": sorted(((round(float(ms), 1), i) for i, ms in enumerate(policy_ms)), reverse=True)[:6],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--policies", nargs="+", default=["smolvla", "act"], choices=["smolvla", "act"])
    parser.add_argument("--record-eval", action="store_true", help="also record the eval dataset while measuring")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rec = make_recordings(tmp / "recs", SynthSpec(episodes=1, stroke_length=8, cameras=True, image_shape=(48, 64)))[0]
        builders = {
            "act": lambda out: save_tiny_act_checkpoint(out, rec),
            "smolvla": lambda out: __import__("tatbot_pipeline.training.tiny", fromlist=["x"]).save_tiny_smolvla_checkpoint(out, rec),
        }
        rows = [run(name, builders[name](tmp / name / "pretrained_model"), tmp, args.steps, args.fps, args.record_eval)
                for name in args.policies]

    print(f"\nvla_infer on the sim robot at {args.fps} Hz, {args.steps} steps, cameras 2x48x64, "
          f"record_eval={args.record_eval}")
    print(f"{'policy':8s} {'jitter p50':>10s} {'p99':>7s} {'max':>7s} | {'select_action mean':>18s} {'p99':>7s} | "
          f"{'overhead p50':>12s} {'mean':>7s} {'p99':>7s} | {'send jitter p50':>15s} {'p99':>7s}  (ms)")
    for r in rows:
        print(f"{r['policy']:8s} {r['jitter_p50']:10.3f} {r['jitter_p99']:7.3f} {r['jitter_max']:7.3f} | "
              f"{r['select_action_mean']:18.3f} {r['select_action_p99']:7.3f} | "
              f"{r['overhead_p50']:12.3f} {r['overhead_mean']:7.3f} {r['overhead_p99']:7.3f} | "
              f"{r['send_jitter_p50']:15.3f} {r['send_jitter_p99']:7.3f}")
    for r in rows:
        print(f"{r['policy']}: slowest select_action (ms, step): {r['slowest_steps']}")
    for r in rows:
        print(f"{r['policy']}: p99 jitter {r['jitter_p99']:.2f} ms = {r['jitter_p99'] / 5:.2f}x the 5 ms target; "
              f"mean overhead {r['overhead_mean']:.2f} ms/step = {r['overhead_mean'] / 2:.2f}x the 2 ms target")


if __name__ == "__main__":
    main()
