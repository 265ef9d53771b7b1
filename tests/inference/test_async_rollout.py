"""Async inference (issue 19): chunks computed off the control thread, and every fail-safe guarantee kept.

Real tiny checkpoints on the sim robot. Faults are injected at our own policy boundary (`LoadedPolicy.chunk` of the
loaded checkpoint): a worker that raises, one that is too slow, one whose chunk turns non-finite. No timing assertions:
the tests count steps, commands and chunks.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.chunks import WORKER_THREAD_NAME as WORKER, ChunkQueue
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.eval_record import INFERENCE_KEY, INFERENCE_NAMES
from tatbot_pipeline.policy.loading import Chunk, load_policy
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.lerobot_tables import numpy_column
from tatbot_pipeline.robot.base import observation_frame
from tatbot_pipeline.robot.safety import SafetyEnvelope
from tatbot_pipeline.robot.sim import SimRobot
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER, READY_POSE
from tests.inference.test_server import FaultySim, assert_parked


def request(checkpoint: Path, **kw) -> VLAInferInput:
    policy = json.loads((checkpoint / "config.json").read_text())["type"]
    return VLAInferInput(**{"policy": policy, "checkpoint_path": str(checkpoint), "device": "cpu", "fps": 10,
                            "inference": "async", **kw})


def settings(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings(home=tmp_path / "home", robot_state_dir=tmp_path / "state")


def workers_gone(within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(t.name == WORKER for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def eval_steps(eval_dir: str) -> dict[str, np.ndarray]:
    """The eval dataset's per-step `inference` columns, by name."""
    import pyarrow.parquet as pq

    (data,) = sorted(Path(eval_dir).glob("data/chunk-*/file-*.parquet"))
    values = numpy_column(pq.read_table(data, columns=[INFERENCE_KEY]).column(INFERENCE_KEY))
    return dict(zip(INFERENCE_NAMES, values.T))


def faulty_worker(fault):
    """A policy loader (vla_infer's `loader`) whose chunk inference misbehaves in the worker thread only:
    `fault(chunk_fn, call)` returns the chunk (or raises); `call` counts the worker's calls from 1."""

    def load(*args, **kwargs):
        loaded = load_policy(*args, **kwargs)
        compute, calls = loaded.chunk, [0]

        def chunk(*a, **kw):
            if threading.current_thread().name != WORKER:
                return compute(*a, **kw)
            calls[0] += 1
            return fault(lambda: compute(*a, **kw), calls[0])

        loaded.chunk = chunk
        return loaded

    return load


# --- the loop --------------------------------------------------------------------------------------------------------


def test_the_async_loop_sends_one_action_per_tick_from_chunks_computed_meanwhile(act_checkpoint, tmp_path):
    sim = FaultySim()
    out = vla_infer(request(act_checkpoint, max_steps=24, record_eval=True), settings(tmp_path), factory=sim)
    assert out.success and out.inference == "async" and out.num_steps == 24, out.message
    robot = sim.robots[-1]
    assert len(robot.commands) == 24 + 2  # ready, one command per step, ready
    steps = eval_steps(out.eval_dir)
    chunk = steps["chunk_index"]
    assert (np.diff(chunk) >= 0).all() and chunk[-1] >= 3  # chunks of 8 replaced as they go: the worker kept up
    assert (steps["rtc_merged"] == 0).all()  # ACT is not a flow-matching policy: replace-with-delay only
    assert workers_gone()


def test_smolvla_chunks_are_merged_by_rtc_in_async_mode(smolvla_checkpoint, tmp_path):
    sim = FaultySim()
    out = vla_infer(request(smolvla_checkpoint, max_steps=24, record_eval=True), settings(tmp_path), factory=sim)
    assert out.success and out.inference == "async", out.message
    steps = eval_steps(out.eval_dir)
    first = steps["chunk_index"] == 0
    assert first.sum() >= 4 and (steps["rtc_merged"][first] == 0).all()  # nothing to merge with yet
    assert (steps["rtc_merged"][~first] == 1).all() and steps["chunk_index"][-1] >= 2
    assert (steps["chunk_latency_s"] > 0).all()


def test_merged_chunks_keep_the_executed_prefix():
    """The queue pops A[0..4] while B is computed from the observation after A[2]; B lands with A[3], A[4] already
    executed: the robot then gets B[2:], never an executed step again, none skipped."""
    a = torch.arange(8, dtype=torch.float32)[:, None].repeat(1, 14)
    b = 100 + a
    queue = ChunkQueue()
    queue.put(Chunk(a, a.numpy(), rtc_merged=False), generation=0, index=0, number=0, latency_s=0.1)
    popped = [queue.pop()[0][0] for _ in range(3)]
    generation, index, left = queue.position()
    assert (generation, index, left) == (1, 3, 5)
    torch.testing.assert_close(queue.left_over(generation, index), a[3:])  # what RTC inpaints B's prefix to
    popped += [queue.pop()[0][0] for _ in range(2)]  # two ticks pass while B is computed
    assert queue.put(Chunk(b, b.numpy(), rtc_merged=True), generation, index, number=1, latency_s=0.2) == 2
    rest = []
    while (item := queue.pop()) is not None:
        rest.append(item[0][0])
        assert item[1].index == 1 and item[1].rtc_merged and item[1].delay_steps == 2
    assert popped + rest == [0, 1, 2, 3, 4, 102, 103, 104, 105, 106, 107]
    assert queue.left_over(generation, index) is None  # an observation from before the merge pairs with nothing


def test_rtc_inpaints_the_new_chunk_to_the_executed_prefix(smolvla_checkpoint):
    """SmolVLA with LeRobot's RTC: the first `inference_delay` actions of a new chunk follow the old chunk's leftover
    (they are being executed from it), however far the unguided chunk would be."""
    policy = load_policy(smolvla_checkpoint, "smolvla", "cpu")
    with SimRobot(cameras=policy.cameras, start=READY_POSE) as sim:
        frame = observation_frame(sim.observe(), policy.cameras)
    left_over = policy.chunk(frame, "draw").original[:4] + 0.5
    policy.enable_rtc(execution_horizon=policy.n_action_steps)
    unguided = policy.chunk(frame, "draw")
    guided = policy.chunk(frame, "draw", inference_delay=2, left_over=left_over)
    assert guided.rtc_merged and not unguided.rtc_merged
    far = (unguided.original[:2] - left_over[:2]).abs().mean()
    near = (guided.original[:2] - left_over[:2]).abs().mean()
    assert near < 0.1 * far, (near, far)


# --- stops ---------------------------------------------------------------------------------------------------------


def test_cancel_stops_the_worker_and_parks(act_checkpoint, tmp_path):
    sim, control = FaultySim(), RolloutControl()

    def progress(fraction, message):
        if message.startswith("step 5 "):
            control.request_stop("cancelled by the operator")

    out = vla_infer(request(act_checkpoint, max_steps=100), settings(tmp_path), factory=sim, control=control,
                    progress=progress)
    assert not out.success and out.num_steps == 5 and out.stop_reason == "cancelled by the operator"
    assert_parked(sim.robots[-1])
    assert len(sim.robots[-1].commands) == 5 + 2
    assert workers_gone()


def test_a_worker_error_stops_the_rollout_with_its_reason(act_checkpoint, tmp_path):
    def fail(compute, call):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    loader = faulty_worker(fail)
    sim = FaultySim()
    out = vla_infer(request(act_checkpoint, max_steps=100), settings(tmp_path), factory=sim, loader=loader)
    assert not out.success and 4 <= out.num_steps < 8, out.message  # the first chunk ran out, nothing after it
    assert out.stop_reason == ("chunk inference failed (RuntimeError: CUDA error: an illegal memory access was "
                               "encountered)")
    assert_parked(sim.robots[-1])
    assert workers_gone()


def test_a_late_chunk_is_a_stop_not_a_hold_or_a_burst(act_checkpoint, tmp_path):
    release, landed = threading.Event(), threading.Event()

    def late(compute, call):
        # However fast this machine is, the second chunk lands only after the rollout has given up on it: the
        # 8 actions of the first chunk run out first, by construction, not by a race against a sleep.
        release.wait(timeout=120)
        chunk = compute()
        landed.set()
        return chunk

    loader = faulty_worker(late)
    sim = FaultySim()
    out = vla_infer(request(act_checkpoint, max_steps=100, record_eval=True), settings(tmp_path), factory=sim,
                    loader=loader)
    release.set()
    assert landed.wait(timeout=60) and workers_gone()
    assert not out.success and out.num_steps == 8, out.message
    assert out.stop_reason.startswith("no action ready for step 9: chunk inference fell behind the 10 Hz control rate")
    robot = sim.robots[-1]
    assert_parked(robot)
    assert len(robot.commands) == 8 + 2  # nothing sent while waiting, and nothing rushed when the chunk landed
    assert eval_steps(out.eval_dir)["chunk_index"].tolist() == [0] * 8


# --- the envelope --------------------------------------------------------------------------------------------------


def assert_within_envelope(robot: SimRobot, fps: int) -> None:
    """Every loop command is within the URDF limits and one envelope step from the previous command."""
    envelope = SafetyEnvelope.for_tatbot(fps)
    sent = np.stack(robot.commands[:-1])  # ready, the loop's commands (the park is the last)
    assert (sent >= JOINT_LOWER).all() and (sent <= JOINT_UPPER).all()
    assert (np.abs(np.diff(sent, axis=0)) <= envelope.max_delta + 1e-6).all()


def test_every_async_action_passes_the_envelope(wild_checkpoint, tmp_path):
    sim = FaultySim()
    out = vla_infer(request(wild_checkpoint, max_steps=30), settings(tmp_path), factory=sim)
    assert not out.success and out.num_steps == 19  # the 20th corrected step in a row is not sent
    assert "had to correct the policy's action 20 steps in a row" in out.stop_reason
    assert out.actions_clamped >= 19
    assert_within_envelope(sim.robots[-1], fps=10)
    assert_parked(sim.robots[-1])


def test_a_non_finite_chunk_from_the_worker_is_never_sent(act_checkpoint, tmp_path):
    def poison(compute, call):
        chunk = compute()
        return Chunk(chunk.original, np.full_like(chunk.actions, np.nan), chunk.rtc_merged)

    loader = faulty_worker(poison)
    sim = FaultySim()
    out = vla_infer(request(act_checkpoint, max_steps=100), settings(tmp_path), factory=sim, loader=loader)
    assert not out.success and "non-finite action" in out.stop_reason
    assert 4 <= out.num_steps < 8
    assert_within_envelope(sim.robots[-1], fps=10)
    assert_parked(sim.robots[-1])
    assert workers_gone()


# --- the default follows the measurement ---------------------------------------------------------------------------


def evaluated(home: Path, checkpoint: Path, chunk_p95_ms: float, device: str = "cpu") -> None:
    board = PipelineSettings(home=home).leaderboard_path
    board.parent.mkdir(parents=True, exist_ok=True)
    board.write_text(json.dumps([{"checkpoint": str(checkpoint), "chunk_latency_p95_ms": chunk_p95_ms,
                                  "device": device, "n_action_steps": 8, "inference_mode": "async"}]))


@pytest.mark.parametrize("chunk_p95_ms, mode", [(80.0, "async"), (1.0, "sync")])
def test_the_default_mode_follows_policy_evaluations_measurement(act_checkpoint, tmp_path, chunk_p95_ms, mode):
    evaluated(tmp_path / "home", act_checkpoint, chunk_p95_ms)
    out = vla_infer(request(act_checkpoint, max_steps=3, inference="auto"), settings(tmp_path), factory=FaultySim())
    assert out.success and out.inference == mode, out.message
    assert f"{mode} inference (default; chunk inference p95 {chunk_p95_ms:.0f} ms, measured by policy_evaluation)" \
        in out.message


def test_a_measurement_on_another_device_is_not_used(act_checkpoint, tmp_path):
    evaluated(tmp_path / "home", act_checkpoint, 1.0, device="cuda")
    out = vla_infer(request(act_checkpoint, dry_run=True, inference="auto"), settings(tmp_path))
    assert out.success and "measured by the warm-up" in out.message and f"would run {out.inference} inference" in out.message


def test_async_is_refused_for_a_policy_with_nothing_to_compute_ahead(act_checkpoint, tmp_path):
    ensembling = tmp_path / "ensembling-act"
    shutil.copytree(act_checkpoint, ensembling)
    config = json.loads((ensembling / "config.json").read_text())
    (ensembling / "config.json").write_text(json.dumps({**config, "n_action_steps": 1, "temporal_ensemble_coeff": 0.01}))
    out = vla_infer(request(ensembling, max_steps=3), settings(tmp_path), factory=FaultySim())
    assert not out.success and "computes a new chunk every step" in out.message and "inference='sync'" in out.message
    auto = vla_infer(request(ensembling, max_steps=3, inference="auto"), settings(tmp_path), factory=FaultySim())
    assert auto.success and auto.inference == "sync", auto.message
