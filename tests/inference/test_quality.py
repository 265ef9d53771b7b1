"""Rollout quality verdicts and the rollout plan, without Dagster."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.delivery import DeployTarget, deploy
from tatbot_pipeline.inference.plan import PlanError, check_plan, plan_rollout
from tatbot_pipeline.inference.quality import rollout_quality
from tatbot_pipeline.inference.rollout import VLAInferOutput


@pytest.mark.parametrize("out, passed, reason", [
    (VLAInferOutput(num_steps=40, actions_clamped=2, actions_rate_limited=5, max_tracking_error_rad=0.05), True, ""),
    (VLAInferOutput(num_steps=40, actions_clamped=33, actions_rate_limited=5), False,
     "33 of 40 actions clamped to the joint limits (82% > 25%)"),
    (VLAInferOutput(num_steps=40, actions_rate_limited=39), False, "39 of 40 actions slowed to the speed limit"),
    (VLAInferOutput(num_steps=10, max_tracking_error_rad=0.3), False, "tracking error up to 0.300 rad > 0.2 rad"),
])
def test_heavy_clamping_or_lagging_arms_warn(out, passed, reason):
    quality = rollout_quality(out)
    assert quality.passed is passed and reason in quality.describe()


def test_the_plan_is_the_promoted_checkpoint_unless_one_is_configured(act_checkpoint, checkpoint_home, tmp_path):
    with pytest.raises(PlanError, match="no promoted checkpoint yet"):
        plan_rollout("", PipelineSettings(home=tmp_path))
    (tmp_path / "promoted.json").write_text(json.dumps({"checkpoint": str(act_checkpoint)}))
    promoted = plan_rollout("", PipelineSettings(home=tmp_path), device="cpu", max_steps=5)
    assert promoted.source == "promoted" and promoted.policy_type == "act" and promoted.run_name == "tiny-act-last"
    configured = plan_rollout(str(act_checkpoint.relative_to(checkpoint_home)), PipelineSettings(home=checkpoint_home), scene="lab")
    assert configured.source == "configured" and configured.checkpoint == act_checkpoint
    request = configured.with_deployment("/node/ckpt").request()
    assert request.checkpoint_path == "/node/ckpt" and request.record_eval and request.scene == "lab"


def test_checkpoint_problems_name_missing_files_and_a_blown_latency_budget(act_checkpoint, tmp_path):
    plan = plan_rollout(str(act_checkpoint), PipelineSettings(home=tmp_path), device="cpu", fps=10)
    assert check_plan(plan_rollout(str(tmp_path / "nope"), PipelineSettings(home=tmp_path)), PipelineSettings(home=tmp_path))[1][0].endswith("does not exist "
        "— pass a pretrained_model dir (outputs/train/<run>/checkpoints/last/pretrained_model)")
    _, problems, note = check_plan(plan, PipelineSettings(home=tmp_path))
    assert problems == ["the configured checkpoint tiny-act-last has no passing sim_evaluation (NOT SIMULATED (no "
                        "sim_evaluation)): it has never run closed-loop on the simulated arms — materialize "
                        "sim_evaluation for it, or set allow_unsimulated: true in resolve_checkpoint's config "
                        "(recorded in the eval dataset and the run's tags)"]
    plan = replace(plan, allow_unsimulated=True)
    _, problems, note = check_plan(plan, PipelineSettings(home=tmp_path))
    assert problems == [] and note.startswith("NOT EVALUATED") and "latency budget unchecked" in note
    board = tmp_path / "outputs" / "eval" / "leaderboard.json"
    board.parent.mkdir(parents=True)
    board.write_text(json.dumps([{"checkpoint": str(act_checkpoint), "latency_p95_ms": 150.0, "device": "cpu",
                                  "thresholds": {"latency_budget_s": 0.0}}]))
    plan = replace(plan_rollout(str(act_checkpoint), PipelineSettings(home=tmp_path), device="cpu", fps=10),
                   allow_unsimulated=True)  # planned again: the plan carries the evaluation it found
    _, problems, _ = check_plan(plan, PipelineSettings(home=tmp_path))
    assert problems == ["p95 latency 150.0 ms measured on cpu exceeds the 100 ms budget at 10 Hz"]


def test_deploy_modes_are_a_registry_with_clear_errors(act_checkpoint, tmp_path):
    deployed = deploy(act_checkpoint, DeployTarget(), PipelineSettings(home=tmp_path))
    assert deployed == str(tmp_path / "deployed" / "tiny-act-last")
    with pytest.raises(ValueError, match="unknown deploy mode 'scp': use one of \\['local', 'rsync'\\]"):
        deploy(act_checkpoint, DeployTarget(mode="scp"), PipelineSettings(home=tmp_path))
    with pytest.raises(ValueError, match="rsync needs robot_node.ssh_host"):
        deploy(act_checkpoint, DeployTarget(mode="rsync"), PipelineSettings(home=tmp_path))
