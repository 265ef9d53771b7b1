"""Rollout loop benchmark (issues 8, 19): does `vla_infer` send every command on its tick, in sync and async mode?

Runs the real `vla_infer` on the sim robot, side by side in one process, with
- the tiny untrained SmolVLA (offline backbone; flow matching, so async mode merges chunks with LeRobot's RTC);
- the same checkpoint slowed so that each chunk takes 1.5 control periods (a wrapper that sleeps after the real
  forward pass, releasing the GIL as a GPU wait does): a stand-in for pi0 on the robot node's GPU;
each in sync mode (chunks computed on the control thread) and async mode (chunks computed by a worker).

Per mode it prints, from the loop's own schedule (`LoopStats.send_late_s`):
- send jitter: scheduled tick -> command actually sent (p50, p99, max). Target p99 <= 5 ms;
- missed ticks: commands sent a whole period or more after their tick. Target 0;
- chunk inference: time per chunk inside the policy (p50), and how many chunks were computed.

The machine's load average is printed too: on a shared machine the tails move with it.
Run: .venv/bin/python bench/bench_rollout.py [--steps 150] [--fps 10] [--slow-periods 1.5] [--stroke-length 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tatbot_pipeline.inference.rollout as rollout
from tatbot_pipeline.config import PipelineSettings, apply_offline_defaults
from tatbot_pipeline.inference.loop import LoopStats
from tatbot_pipeline.policy.loading import load_policy
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.synth import SynthSpec, make_recordings

apply_offline_defaults()  # before anything imports lerobot


class Probe:
    """What one rollout did: the loop's stats, and every chunk's compute time inside the policy."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.stats: list[LoopStats] = []
        self.chunk_s: list[float] = []

    def load(self, *args, **kwargs):
        """load_policy, with SmolVLA's chunk computation (used by select_action and predict_action_chunk) timed and,
        for the slowed policy, padded with a sleep up to `slow_s`."""
        loaded = load_policy(*args, **kwargs)
        compute = loaded.policy._get_action_chunk

        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return compute(*a, **kw)
            finally:
                remaining = self.slow_s - (time.perf_counter() - started)
                if remaining > 0:
                    time.sleep(remaining)
                self.chunk_s.append(time.perf_counter() - started)

        loaded.policy._get_action_chunk = timed
        return loaded

    def loop_stats(self) -> LoopStats:
        self.stats.append(LoopStats())
        return self.stats[-1]


def run(label: str, mode: str, checkpoint: Path, home: Path, steps: int, fps: int, slow_s: float) -> dict:
    probe = Probe(slow_s)
    rollout.load_policy, rollout.LoopStats = probe.load, probe.loop_stats
    try:
        request = VLAInferInput(policy="smolvla", checkpoint_path=str(checkpoint), device="cpu", max_steps=steps,
                                fps=fps, inference=mode)
        settings = PipelineSettings(home=home, robot_state_dir=home / "robot-state")
        out = vla_infer(request, settings, factory=lambda scene, cams, rs: SimRobot(cameras=cams, start=scene.sleep))
    finally:
        rollout.load_policy, rollout.LoopStats = load_policy, LoopStats
    if not out.success:
        raise SystemExit(f"{label} {mode}: rollout failed: {out.message}")
    stats = probe.stats[-1]
    late_ms = np.array(stats.send_late_s) * 1000
    in_loop = probe.chunk_s[1 + rollout.WARM_UP_TIMED_CHUNKS:]  # the warm-up's chunks are not the loop's
    return {
        "policy": label, "mode": mode, "steps": out.num_steps, "missed": stats.missed_ticks,
        "p50": np.percentile(late_ms, 50), "p99": np.percentile(late_ms, 99), "max": late_ms.max(),
        "chunk_ms": float(np.median(in_loop)) * 1000, "chunks": len(in_loop),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--slow-periods", type=float, default=1.5, help="chunk time of the slowed policy, in periods")
    parser.add_argument("--stroke-length", type=int, default=16, help="chunk size = n_action_steps (tatbot: 16)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared 2-core machine more threads wait on preempted peers "
                        "and a 50 ms chunk takes up to 2 s)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.torch_threads)
    slow_s = args.slow_periods / args.fps
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = SynthSpec(episodes=1, stroke_length=args.stroke_length, cameras=True, image_shape=(48, 64))
        rec = make_recordings(tmp / "recs", spec)[0]
        from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

        checkpoint = save_tiny_smolvla_checkpoint(tmp / "smolvla" / "pretrained_model", rec)
        rows = [run(label, mode, checkpoint, tmp, args.steps, args.fps, slow)
                for label, slow in (("tiny", 0.0), ("slowed", slow_s)) for mode in ("sync", "async")]

    print(f"\nvla_infer on the sim robot at {args.fps} Hz, {args.steps} steps, tiny SmolVLA (chunk of "
          f"{args.stroke_length}, cameras 2x48x64); slowed = chunks padded to {args.slow_periods:g} periods; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs, "
          f"{args.torch_threads} torch thread(s)")
    print(f"{'policy':7s} {'mode':5s} | {'send jitter p50':>15s} {'p99':>7s} {'max':>7s} (ms) | {'missed ticks':>12s} | "
          f"{'chunk inference p50':>19s} {'chunks':>6s}")
    for r in rows:
        print(f"{r['policy']:7s} {r['mode']:5s} | {r['p50']:15.2f} {r['p99']:7.2f} {r['max']:7.2f}      | "
              f"{r['missed']:12d} | {r['chunk_ms']:16.1f} ms {r['chunks']:6d}")
    slow_async = next(r for r in rows if r["policy"] == "slowed" and r["mode"] == "async")
    print(f"async send jitter p99 {slow_async['p99']:.2f} ms, missed ticks {slow_async['missed']}, "
          f"with chunk inference {slow_async['chunk_ms']:.0f} ms at {args.fps} Hz")


if __name__ == "__main__":
    sys.exit(main())
