"""Our async RTC rollout loop (`inference/`) against lerobot 0.6.1's `lerobot-rollout --inference.type=rtc` engine
(issue 28), on the same sim robot, checkpoint and machine.

Upstream's side is its own code: `lerobot.rollout.inference.rtc.RTCInferenceEngine` (the background chunk thread of
`lerobot-rollout --inference.type=rtc`, default `queue_threshold`) driven by the control loop of its base strategy
(`strategies/base.py: run`, interpolation multiplier 1: observe, notify the engine, pop one action, send it,
`precise_sleep` the rest of the period). `lerobot-rollout` itself needs a lerobot `Robot` class; the loop is
reproduced line for line over our `SimRobot` instead, with nothing between the engine and `send` — which is exactly
what adopting it would give the arms. Ours is `vla_infer` in async mode (guard, envelope, monitors on every action).

Printed per loop, from the time of every command actually sent:
- send jitter: |interval between two sends - period| (p50, p99, max), and the drift from the ideal tick grid;
- missed ticks: periods with no command (upstream sends nothing when its queue is empty; ours stops the rollout);
- upstream's chunk merges whose delay (estimated from latency) differs from the actions executed meanwhile;
Nothing is asserted; the last line is the headline.

Run: .venv/bin/python bench/bench_upstream_rollout.py [--steps 150] [--fps 10] [--stroke-length 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tatbot_pipeline.config import PipelineSettings, apply_offline_defaults
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.policy.loading import load_policy
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.robot.spec import CAMERAS, READY_POSE, dataset_features
from tatbot_pipeline.synth import SynthSpec, make_recordings

apply_offline_defaults()  # before anything imports lerobot


class TimedSim(SimRobot):
    """The sim robot, recording when each streaming (non-blocking) command is sent."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent_at: list[float] = []

    def send(self, joints, goal_time, blocking=False):
        if not blocking:
            self.sent_at.append(time.perf_counter())
        return super().send(joints, goal_time, blocking)


def jitter(sent_at: list[float], period: float) -> dict:
    t = np.asarray(sent_at)
    intervals_ms = np.abs(np.diff(t) - period) * 1000
    drift_ms = (t[-1] - t[0] - period * (len(t) - 1)) * 1000
    return {"p50": np.percentile(intervals_ms, 50), "p99": np.percentile(intervals_ms, 99),
            "max": intervals_ms.max(), "drift": drift_ms, "sent": len(t)}


def ours(checkpoint: Path, home: Path, steps: int, fps: int) -> tuple[dict, int]:
    robots: list[TimedSim] = []

    def factory(scene, cams, rs):
        robots.append(TimedSim(cameras=cams, start=scene.sleep))
        return robots[-1]

    request = VLAInferInput(policy="smolvla", checkpoint_path=str(checkpoint), device="cpu", max_steps=steps, fps=fps,
                            inference="async")
    out = vla_infer(request, PipelineSettings(home=home, robot_state_dir=home / "robot-state"), factory=factory)
    if not out.success:
        raise SystemExit(f"ours: rollout failed: {out.message}")
    sent = robots[-1].sent_at[-out.num_steps:]  # the loop's commands (moves to ready are blocking)
    return jitter(sent, 1 / fps), steps - len(sent)


def upstream(checkpoint: Path, steps: int, fps: int, shape: tuple[int, int]) -> tuple[dict, int]:
    """RTCInferenceEngine + the base strategy's loop, as lerobot-rollout runs them (see module docstring)."""
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.rollout.inference.rtc import RTCInferenceEngine
    from lerobot.utils.robot_utils import precise_sleep

    loaded = load_policy(checkpoint, "smolvla", "cpu")
    rtc = RTCConfig(enabled=True)  # lerobot-rollout's defaults
    loaded.config.rtc_config = rtc
    loaded.policy.init_rtc_processor()
    robot = TimedSim(cameras={cam: shape for cam in CAMERAS}, start=READY_POSE)
    robot.connect()

    class Wrapper:  # what the engine reads of lerobot's ThreadSafeRobot
        robot_type = "tatbot"
        action_features = {}

    hw_features = {k: v for k, v in dataset_features(True, shape).items() if k.startswith("observation")}
    engine = RTCInferenceEngine(loaded.policy, loaded.preprocessor, loaded.postprocessor, Wrapper(), rtc, hw_features,
                                task="left: stroke, right: stroke", fps=fps, device="cpu")
    mismatches = DelayMismatches()
    logging.getLogger("lerobot.policies.rtc.action_queue").addHandler(mismatches)
    period, missed = 1 / fps, 0
    engine.start()
    engine.resume()
    try:
        while engine.action_queue.empty():  # lerobot-rollout's first chunk: the loop idles until it lands
            engine.notify_observation(robot.observe())
            time.sleep(period)
        for _ in range(steps):
            loop_start = time.perf_counter()
            engine.notify_observation(robot.observe())
            action = engine.get_action(None)
            if action is None:
                missed += 1
            else:
                robot.send(action.numpy(), goal_time=period)
            if (sleep_t := period - (time.perf_counter() - loop_start)) > 0:
                precise_sleep(sleep_t)
    finally:
        engine.stop()
        robot.disconnect()
    print(f"upstream: {mismatches.count} of its chunk merges used a delay other than the actions executed meanwhile "
          f"(ActionQueue's 'Indexes diff is not equal to real delay'); ours counts the delay exactly")
    return jitter(robot.sent_at, period), missed


class DelayMismatches(logging.Handler):
    """Counts ActionQueue's warning that a merge's delay (from the measured latency) differs from the actions popped."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "real delay" in record.getMessage()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--stroke-length", type=int, default=16)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as bench_rollout.py: a shared 2-core machine
    shape = (48, 64)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rec = make_recordings(tmp / "recs", SynthSpec(episodes=1, stroke_length=args.stroke_length, cameras=True,
                                                       image_shape=shape))[0]
        from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

        checkpoint = save_tiny_smolvla_checkpoint(tmp / "smolvla" / "pretrained_model", rec)
        rows = {"ours (vla_infer async)": ours(checkpoint, tmp, args.steps, args.fps),
                "upstream (RTC engine + base loop)": upstream(checkpoint, args.steps, args.fps, shape)}
    print(f"\n{args.steps} ticks at {args.fps} Hz, tiny SmolVLA (chunk {args.stroke_length}), sim robot, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'loop':34s} | {'send jitter p50':>15s} {'p99':>7s} {'max':>7s} (ms) | {'drift (ms)':>10s} | {'missed':>6s}")
    for label, (j, missed) in rows.items():
        print(f"{label:34s} | {j['p50']:15.2f} {j['p99']:7.2f} {j['max']:7.2f}      | {j['drift']:10.1f} | {missed:6d}")
    (o, om), (u, um) = rows.values()
    print(f"send jitter p99 upstream/ours: {u['p99'] / max(o['p99'], 1e-3):.2f}x ({u['p99']:.2f} vs {o['p99']:.2f} ms; "
          f"missed ticks {um} vs {om}; adopting needs <= 1.2x)")


if __name__ == "__main__":
    main()
