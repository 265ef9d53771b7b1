"""What `robot_eval` rolls out, decided and checked before anything moves.

A `RolloutPlan` is the typed record the job's ops pass along before the rollout, a `RolloutResult` the one after it: the checkpoint (configured, or the promoted one), its
policy type, the request the robot node will get, and where the checkpoint was deployed. `check_plan`
collects every reason to refuse it on this side (files missing, slower than its latency budget) so a run fails
before a deploy or a robot is touched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.promotion import leaderboard_entry, read_promoted, rollout_latency_problem
from tatbot_pipeline.inference.delivery import check_checkpoint, deployed_name
from tatbot_pipeline.inference.rollout import VLAInferInput, VLAInferOutput, checkpoint_location


class PlanError(ValueError):
    """No checkpoint to roll out, or one that must not be rolled out; the message says what to do."""


@dataclass(frozen=True)
class RolloutPlan:
    checkpoint: Path  # the pretrained_model dir on the Dagster side
    policy_type: str
    source: str  # "promoted" or "configured"
    scene: str = "default"
    device: str = "cuda"
    max_steps: int = 40
    fps: int = 10
    enable_realsense: bool = False
    task_prompt: str | None = None
    inference: str = "auto"  # "sync" | "async" | "auto" (what the checkpoint's measured chunk latency calls for)
    deployed: str | None = None  # where the robot node loads it from, once deployed

    @property
    def run_name(self) -> str:
        """<run>-<step> of an `outputs/train/<run>/checkpoints/<step>/pretrained_model` dir."""
        return deployed_name(self.checkpoint)

    def with_deployment(self, deployed: str) -> "RolloutPlan":
        return replace(self, deployed=deployed)

    def request(self) -> VLAInferInput:
        """The `vla_infer` input for the robot node: always recorded, so the rollout joins the lineage."""
        return VLAInferInput(policy=self.policy_type, checkpoint_path=self.deployed or str(self.checkpoint),
                             scene=self.scene, device=self.device, max_steps=self.max_steps, fps=self.fps,
                             enable_realsense=self.enable_realsense, record_eval=True, task_prompt=self.task_prompt,
                             inference=self.inference)


def plan_rollout(checkpoint: str, settings: PipelineSettings, **request) -> RolloutPlan:
    """The configured checkpoint (relative paths under the pipeline home), else the promoted one."""
    if checkpoint:
        path, source = checkpoint_location(checkpoint, settings.home), "configured"
    else:
        promoted = read_promoted(settings)
        if promoted is None:
            raise PlanError("no promoted checkpoint yet — materialize policy_evaluation (it promotes a checkpoint that "
                            "passes the gate), or set ops.resolve_checkpoint.config.checkpoint")
        path, source = Path(promoted["checkpoint"]), "promoted"
    return RolloutPlan(checkpoint=path, policy_type=policy_type(path), source=source, **request)


def policy_type(checkpoint: Path) -> str:
    try:
        return str(json.loads((Path(checkpoint) / "config.json").read_text())["type"])
    except (OSError, ValueError, KeyError):
        return "unknown"  # check_checkpoint names what is wrong with the dir


def check_plan(plan: RolloutPlan, settings: PipelineSettings) -> tuple[RolloutPlan, list[str], str]:
    """(the plan, every reason to refuse it, a note for the log). Latency is judged with the promotion gate's rule
    for this rollout's rate, on the device the checkpoint was evaluated on; an `auto` plan takes the inference mode
    that measurement calls for."""
    problems = check_checkpoint(plan.checkpoint)
    if problems:
        return plan, problems, ""
    entry = leaderboard_entry(settings, plan.checkpoint)
    if entry is None:
        return plan, [], "checkpoint not evaluated offline (not in the leaderboard): latency budget unchecked"
    problem, mode = rollout_latency_problem(entry, plan.fps, plan.device)
    if mode and plan.inference == "auto":
        plan = replace(plan, inference=mode)
    note = f"latency within the gate's budget at {plan.fps} Hz on {plan.device}; inference {plan.inference}"
    return plan, [problem] if problem else [], note


@dataclass(frozen=True)
class RolloutResult:
    """What `vla_infer` returned for a plan, on which node, and how long the call took: what `robot_eval` records."""

    output: VLAInferOutput
    plan: RolloutPlan
    node: str
    duration_s: float

    @property
    def eval_name(self) -> str | None:
        """The recorded eval dataset's dir name (`vla-eval-<scene>-<ts>`): its `eval_dataset` partition."""
        return Path(self.output.eval_dir).name if self.output.eval_dir else None

    def summary(self, quality: str) -> str:
        """'OK — 40/40 steps of <run> on hog (default); 0 clamped, 0 rate-limited; <quality>'."""
        out, plan = self.output, self.plan
        verdict = "OK" if out.success else f"STOPPED at step {out.num_steps}: {out.stop_reason or out.message}"
        return (f"{verdict} — {out.num_steps}/{plan.max_steps} steps of {plan.run_name} on {self.node} "
                f"({plan.scene}); {out.actions_clamped} clamped, {out.actions_rate_limited} rate-limited; {quality}")
