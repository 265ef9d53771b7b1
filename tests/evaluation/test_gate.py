"""The promotion gate's latency rule by inference mode (issue 19), on hand-made evaluations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.evaluation.gate import Thresholds, decide, record
from tatbot_pipeline.policy.modes import latency_rule
from tatbot_pipeline.promotion import leaderboard_entry, leaderboard_markdown, rollout_latency_problem
from tatbot_pipeline.evaluation.action_errors import action_errors, latency
from tatbot_pipeline.evaluation.offline import OfflineEval

ACCURATE = Thresholds(max_mae=1e9, max_joint_mae=1e9)  # latency_budget_s 0: the budget of the assumed mode


def evaluation(chunk_p95_ms: float, n_action_steps: int = 16, fps: float = 10.0, checkpoint: str = "/ckpt/a") -> OfflineEval:
    actions = np.zeros((n_action_steps, 14), dtype=np.float32)
    return OfflineEval(
        checkpoint=checkpoint, policy_type="pi0", device="cuda", val_root="/val", fps=fps, episodes=1,
        frames=n_action_steps, errors=action_errors(actions, actions, np.arange(n_action_steps)),
        latency=latency(np.full(20, chunk_p95_ms / 1000)), n_action_steps=n_action_steps,
    )


@pytest.mark.parametrize("p95_ms, mode, budget_ms, promoted", [
    (10.0, "sync", 100.0, True),  # fast: sync, one period
    (24.0, "sync", 100.0, True),
    (30.0, "async", 700.0, True),  # over a quarter period: async, (16 - 1) // 2 = 7 periods
    (150.0, "async", 700.0, True),  # pi0 on a robot GPU, 1.5 periods: fine in async, a missed tick in sync
    (700.0, "async", 700.0, True),
    (750.0, "async", 700.0, False),  # 8 periods: 16 - 8 leaves 8 actions for the next 8-period chunk, no margin
])
def test_the_latency_budget_follows_the_mode_the_rollout_would_run_in(p95_ms, mode, budget_ms, promoted):
    decision = decide(evaluation(p95_ms), ACCURATE, health_passed=True)
    assert decision.latency.mode == mode and decision.latency.budget_s * 1000 == pytest.approx(budget_ms)
    assert decision.passed is promoted
    if not promoted:
        assert decision.reasons == [f"p95 chunk latency {p95_ms:.1f} ms on cuda > budget {budget_ms:.1f} ms assuming "
                                    "async inference ((n_action_steps 16 - margin 1) // 2 periods at 10 Hz)"]


def test_async_cannot_hide_a_chunk_longer_than_half_of_it():
    """With 8 actions per chunk a 4-period chunk leaves 4 actions for the next 4-period one: no margin, refused."""
    assert latency_rule(0.300, 10, 8).passed and not latency_rule(0.400, 10, 8).passed
    assert not latency_rule(0.150, 10, 1).passed  # one action per chunk: async has nothing to compute ahead


def test_a_lab_budget_overrides_the_mode_budget_and_the_reason_says_so():
    rule = latency_rule(0.150, 10, 16, budget_override_s=0.1)
    assert rule.mode == "async" and not rule.passed
    assert rule.reason("cpu").endswith("assuming async inference (latency_budget_ms set for the gate)")


def test_the_leaderboard_records_the_mode_assumed(tmp_path: Path):
    board = record(PipelineSettings(home=tmp_path), evaluation(150.0), decide(evaluation(150.0), ACCURATE, True), ACCURATE, {})
    (entry,) = board
    assert entry["inference_mode"] == "async" and entry["chunk_latency_p95_ms"] == pytest.approx(150.0)
    assert entry["latency_budget_ms"] == pytest.approx(700.0) and entry["n_action_steps"] == 16
    assert "| 150 async (≤ 700) | not simulated | awaiting sim_evaluation |" in leaderboard_markdown(board, None)
    settings = PipelineSettings(home=tmp_path)
    assert leaderboard_entry(settings, "/ckpt/a") == entry and leaderboard_entry(settings, "/ckpt/b") is None


def test_a_legacy_leaderboard_entry_keeps_the_per_call_rule(tmp_path: Path):
    legacy = {"checkpoint": "/old", "policy_type": "act", "mae": 0.1, "worst_joint_mae": 0.2, "latency_p95_ms": 250.0,
              "device": "cpu", "promoted": True, "reasons": [], "thresholds": {"latency_budget_s": 0.0}}
    problem, mode = rollout_latency_problem(legacy, fps=10, device="cpu")
    assert problem == "p95 latency 250.0 ms measured on cpu exceeds the 100 ms budget at 10 Hz" and mode is None
    assert "250 per call" in leaderboard_markdown([legacy], None)


def test_a_rollout_check_uses_the_chunk_rule_on_the_same_device_only(tmp_path: Path):
    entry = record(PipelineSettings(home=tmp_path), evaluation(150.0), decide(evaluation(150.0), ACCURATE, True), ACCURATE, {})[0]
    assert rollout_latency_problem(entry, fps=10, device="cuda") == (None, "async")
    problem, mode = rollout_latency_problem(entry, fps=50, device="cuda")  # 7.5 periods at 50 Hz: too slow
    assert mode == "async" and "p95 chunk latency 150.0 ms on cuda > budget 140.0 ms" in problem
    assert rollout_latency_problem(entry, fps=10, device="cpu") == (None, None)  # measured on another device
    assert json.loads((tmp_path / "outputs/eval/leaderboard.json").read_text())[0]["inference_mode"] == "async"


def test_the_gate_builds_its_thresholds_from_plain_settings_and_the_launchpad(monkeypatch):
    monkeypatch.setenv("TATBOT_GATE_MAX_MAE", "0.2")
    monkeypatch.setenv("TATBOT_GATE_LATENCY_MS", "250")
    settings = PipelineSettings.from_env()
    assert settings.gate_overrides == {"max_mae": 0.2, "latency_budget_s": 0.25}  # plain numbers, no gate object
    assert Thresholds.for_lab(settings) == Thresholds(max_mae=0.2, max_joint_mae=0.35, latency_budget_s=0.25)
    chosen = Thresholds.for_lab(settings, max_mae=None, max_joint_mae=0.5, latency_budget_s=None)
    assert chosen == Thresholds(max_mae=0.2, max_joint_mae=0.5, latency_budget_s=0.25)
