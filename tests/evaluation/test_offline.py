"""Offline evaluation of a tiny SmolVLA checkpoint on held-out episodes, and the promotion gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.evaluation.gate import Thresholds, decide, record
from tatbot_pipeline.promotion import leaderboard_markdown, read_promoted, record_sim
from tatbot_pipeline.evaluation.action_errors import action_errors
from tatbot_pipeline.evaluation.offline import evaluate_checkpoint
from tatbot_pipeline.plots import error_summary, png_markdown, trajectories


@pytest.fixture(scope="module")
def smolvla_eval(tmp_path_factory, pristine_recording: Path):
    from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

    home = tmp_path_factory.mktemp("evalhome")
    ckpt = save_tiny_smolvla_checkpoint(home / "outputs/train/tiny/checkpoints/last/pretrained_model", pristine_recording)
    return home, evaluate_checkpoint(ckpt, pristine_recording, device="cpu", max_episodes=2)


def test_replay_covers_the_episodes_and_metrics_agree_with_the_traces(smolvla_eval, pristine_recording: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    _, result = smolvla_eval
    assert result.policy_type == "smolvla" and result.device == "cpu"
    assert result.episodes == 2 and result.frames == 16  # 2 episodes x stroke_length 8
    # one chunk per 8 frames, and its whole computation is what is timed (not 16 mostly-queue-pop calls)
    assert result.n_action_steps == 8 and result.latency.calls == 2
    assert result.latency.max_s >= result.latency.p95_s > 0
    ds = LeRobotDataset("x", root=pristine_recording, video_backend="pyav")
    recorded = np.stack(ds.hf_dataset["action"][:16])
    np.testing.assert_allclose(np.concatenate([t.recorded for t in result.traces]), recorded, atol=1e-6)
    predicted = np.concatenate([t.predicted for t in result.traces])
    assert predicted.shape == (16, 14) and np.isfinite(predicted).all()
    # The grippers never move in tatbot's strokes: the policy does not predict them, and the means leave them out.
    assert result.errors.not_predicted == ("left.gripper.pos", "right.gripper.pos")
    again = action_errors(predicted, recorded, np.tile(np.arange(8), 2), not_predicted=result.errors.not_predicted)
    assert result.errors.mae == pytest.approx(again.mae)
    assert result.errors.mae == pytest.approx(np.abs(predicted - recorded)[:, [*range(6), *range(7, 13)]].mean())
    assert result.errors.mae_per_joint == pytest.approx(again.mae_per_joint)
    assert len(result.errors.mae_per_chunk_step) == 8  # n_action_steps = stroke_length


def test_gate_rejects_on_each_threshold_and_on_failed_health(smolvla_eval):
    _, result = smolvla_eval
    loose = Thresholds(max_mae=1e9, max_joint_mae=1e9, latency_budget_s=1e9)
    assert decide(result, loose, health_passed=True).passed
    strict_error = decide(result, Thresholds(max_mae=0.0, max_joint_mae=1e9, latency_budget_s=1e9), health_passed=True)
    assert not strict_error.passed and "mean action error" in strict_error.reasons[0]
    strict_joint = decide(result, Thresholds(max_mae=1e9, max_joint_mae=0.0, latency_budget_s=1e9), health_passed=True)
    assert not strict_joint.passed and ".pos error" in strict_joint.reasons[0]
    slow = decide(result, Thresholds(max_mae=1e9, max_joint_mae=1e9, latency_budget_s=1e-9), health_passed=True)
    assert not slow.passed and "p95 chunk latency" in slow.reasons[0] and "latency_budget_ms set" in slow.reasons[0]
    sick = decide(result, loose, health_passed=False, health_note="loss_decreased failed")
    assert not sick.passed and "loss_decreased" in sick.reasons[0]


def test_only_a_checkpoint_that_passes_both_gates_is_promoted(smolvla_eval, tmp_path: Path):
    _, result = smolvla_eval
    settings = PipelineSettings(home=tmp_path)
    loose = Thresholds(max_mae=1e9, max_joint_mae=1e9, latency_budget_s=1e9)
    lineage = {"split_version": "v1", "checkpoint_sha256": "a" * 64}
    board = record(settings, result, decide(result, loose, True), loose, lineage)
    assert read_promoted(settings) is None  # the open-loop gate alone promotes nothing
    assert board[0]["open_loop_passed"] and not board[0]["promoted"] and board[0]["split_version"] == "v1"

    failed_sim = {"passed": False, "strokes": 8, "tip_error_mm_p95": 9.0, "reasons": ["tip deviation p95 9 mm > 3 mm"]}
    entry = record_sim(settings, result.checkpoint, "a" * 64, failed_sim)
    assert not entry["promoted"] and entry["reasons"] == ["sim: tip deviation p95 9 mm > 3 mm"]
    assert read_promoted(settings) is None
    entry = record_sim(settings, result.checkpoint, "a" * 64, {**failed_sim, "passed": True, "reasons": []})
    assert entry["promoted"] and read_promoted(settings)["sim"]["tip_error_mm_p95"] == 9.0

    rejected = type(result)(**{**result.__dict__, "checkpoint": "/elsewhere/pretrained_model"})
    board = record(settings, rejected, decide(rejected, loose, False), loose, {"checkpoint_sha256": "b" * 64})
    record_sim(settings, rejected.checkpoint, "b" * 64, {**failed_sim, "passed": True, "reasons": []})
    assert read_promoted(settings)["checkpoint"] == result.checkpoint  # a sim pass does not promote an open-loop fail
    board = json.loads(settings.leaderboard_path.read_text())
    assert [e["promoted"] for e in board] == [True, False]
    table = leaderboard_markdown(board, read_promoted(settings))
    assert table.count("\n") == 3 and "NOT PROMOTED: training health checks did not pass" in table
    assert "pass 9.0 (8 strokes) | PROMOTED |" in table
    assert json.loads((tmp_path / "outputs/eval/leaderboard.json").read_text()) == board


def test_chunk_replay_predicts_what_select_action_replays(tmp_path: Path, pristine_recording: Path):
    """ACT is deterministic: the offline eval's chunk-per-n-frames replay must give exactly the actions LeRobot's
    select_action (the robot's sync path) gives frame by frame."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from tatbot_pipeline.evaluation.offline import frame_to_observation
    from tatbot_pipeline.policy.loading import load_policy
    from tests.inference.checkpoints import save_tiny_act_checkpoint

    ckpt = save_tiny_act_checkpoint(tmp_path / "act", pristine_recording, chunk_size=4)
    result = evaluate_checkpoint(ckpt, pristine_recording, device="cpu", max_episodes=1)
    assert result.n_action_steps == 4 and result.latency.calls == 2  # 8 frames, a chunk every 4

    policy = load_policy(ckpt, "act", "cpu")
    ds = LeRobotDataset("x", root=pristine_recording, video_backend="pyav")
    stepwise = np.stack([policy.act(frame_to_observation(ds[i]), ds[i]["task"]) for i in range(8)])
    np.testing.assert_allclose(result.traces[0].predicted, stepwise, atol=1e-5)


def test_plots_render(smolvla_eval):
    _, result = smolvla_eval
    trace = result.traces[0]
    md = png_markdown(trajectories(trace.recorded, trace.predicted, "episode 0"), "traj")
    assert md.startswith("![traj](data:image/png;base64,") and len(md) > 5000
    errs = np.abs(np.concatenate([t.predicted - t.recorded for t in result.traces]))
    assert len(png_markdown(error_summary(errs, result.errors.mae_per_chunk_step))) > 5000
