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
from tatbot_pipeline.digest import checkpoint_sha256
from tatbot_pipeline.promotion import leaderboard_entry, read_promoted, rollout_latency_problem, simulated
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
    # The checkpoint's identity (digest.py): the digest its evaluation judged, or, never evaluated, its digest now.
    # Every hand-over checks it: check_plan here, the deployer on the copy, vla_infer before loading.
    sha256: str = ""
    evaluation: dict | None = None  # its leaderboard entry (what judged it), None when no evaluation ever did
    # A checkpoint with no passing sim_evaluation is refused unless this is set (robot_eval's allow_unsimulated):
    # the override is recorded in the eval dataset's metadata and the run's tags.
    allow_unsimulated: bool = False

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
                             inference=self.inference, checkpoint_sha256=self.sha256 or None)

    @property
    def simulated(self) -> str:
        """One line: the sim evaluation that passed these bytes, or that none did (and whether that was overridden)."""
        sim = (self.evaluation or {}).get("sim") or {}
        if sim.get("passed"):
            p95 = sim.get("tip_error_mm_p95")
            return f"simulated: sim gate passed on {sim.get('strokes')} strokes, tip p95 {p95:.3g} mm" if p95 is not None \
                else f"simulated: sim gate passed on {sim.get('strokes')} strokes"
        why = "its sim gate failed" if sim else "no sim_evaluation"
        return f"NOT SIMULATED ({why}){': rolled out with allow_unsimulated' if self.allow_unsimulated else ''}"

    @property
    def judged(self) -> bool:
        """Whether a policy_evaluation judged these bytes (a sim-only leaderboard entry is not a judgement)."""
        return self.evaluation is not None and self.evaluation.get("mae") is not None

    @property
    def evaluated(self) -> str:
        """One line for metadata and summaries: what judged these bytes, or that nothing did."""
        e = self.evaluation
        if not self.judged:
            return "NOT EVALUATED: no policy_evaluation judged these bytes"
        mae = f", MAE {e['mae']:.4g} rad" if isinstance(e.get("mae"), float) else ""
        return f"evaluated {e.get('evaluated_at', '(date unknown)')}{mae}, {'promoted' if e.get('promoted') else 'not promoted'}"


def plan_rollout(checkpoint: str, settings: PipelineSettings, **request) -> RolloutPlan:
    """The configured checkpoint (relative paths under the pipeline home), else the promoted one, with the digest
    its evaluation judged (promoted.json, the leaderboard) or, never evaluated, its digest now."""
    if checkpoint:
        path, source = checkpoint_location(checkpoint, settings.home), "configured"
        now = checkpoint_sha256(path) if path.is_dir() else ""
        evaluation = leaderboard_entry(settings, path, now or None)
    else:
        evaluation = read_promoted(settings)
        if evaluation is None:
            raise PlanError("no promoted checkpoint yet — materialize policy_evaluation (it promotes a checkpoint that "
                            "passes the gate), or set ops.resolve_checkpoint.config.checkpoint")
        path, source, now = Path(evaluation["checkpoint"]), "promoted", ""
    judged = (evaluation or {}).get("checkpoint_sha256") or now or (checkpoint_sha256(path) if path.is_dir() else "")
    return RolloutPlan(checkpoint=path, policy_type=policy_type(path), source=source, sha256=judged,
                       evaluation=evaluation, **request)


def policy_type(checkpoint: Path) -> str:
    try:
        return str(json.loads((Path(checkpoint) / "config.json").read_text())["type"])
    except (OSError, ValueError, KeyError):
        return "unknown"  # check_checkpoint names what is wrong with the dir


def check_plan(plan: RolloutPlan, settings: PipelineSettings) -> tuple[RolloutPlan, list[str], str]:
    """(the plan, every reason to refuse it, a note for the log). The files must be the ones that were evaluated.
    Latency is judged with the promotion gate's rule for this rollout's rate, on the device the checkpoint was
    evaluated on; an `auto` plan takes the inference mode that measurement calls for."""
    problems = check_checkpoint(plan.checkpoint)
    if problems:
        return plan, problems, ""
    now = checkpoint_sha256(plan.checkpoint)
    if now != plan.sha256:
        return plan, [f"the {plan.source} checkpoint {plan.checkpoint} changed since it was evaluated (its files' "
                      f"SHA-256 is {now[:12]}…, the evaluated one {plan.sha256[:12]}…) — evaluate it again "
                      "(trained_policy, then policy_evaluation) or roll out the evaluated files"], ""
    if not simulated(plan.evaluation) and not plan.allow_unsimulated:
        return plan, [f"the {plan.source} checkpoint {plan.run_name} has no passing sim_evaluation ({plan.simulated}): "
                      "it has never run closed-loop on the simulated arms — materialize sim_evaluation for it, or "
                      "set allow_unsimulated: true in resolve_checkpoint's config (recorded in the eval dataset and "
                      "the run's tags)"], ""
    entry = plan.evaluation
    if entry is None:
        return plan, [], f"{plan.evaluated}; {plan.simulated}: latency budget unchecked"
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

    def verdict(self) -> str:
        """'OK 40/40' or 'STOPPED 12/40': the rollout in a word and its steps."""
        return f"{'OK' if self.output.success else 'STOPPED'} {self.output.num_steps}/{self.plan.max_steps}"

    def summary(self, quality: str, backend: str) -> str:
        """'OK — 40/40 steps of <run> on hog, tatbot backend, scene default; 0 clamped, 0 rate-limited; <quality>':
        the node, the backend that ran and the scene each named."""
        out, plan = self.output, self.plan
        verdict = "OK" if out.success else f"STOPPED at step {out.num_steps}: {out.stop_reason or out.message}"
        judged = "" if plan.judged else " (NOT EVALUATED)"
        judged += "" if simulated(plan.evaluation) else " (NOT SIMULATED)"
        gate = ((plan.evaluation or {}).get("sim") or {}).get("gate_name")
        judged += f" (simulated under {gate})" if simulated(plan.evaluation) and gate else ""
        return (f"{verdict} — {out.num_steps}/{plan.max_steps} steps of {plan.run_name}{judged} on {self.node}, "
                f"{backend} backend, scene {plan.scene}; {out.actions_clamped} clamped, {out.actions_rate_limited} "
                f"rate-limited; {quality}")

    def lineage(self) -> dict[str, str]:
        """From this rollout back to the recordings, by content and version: the checkpoint's digest, what judged
        it, the training run, the split it was trained on (and so its recordings, listed by the split's manifest)."""
        e = self.plan.evaluation or {}
        return {"checkpoint_sha256": self.output.checkpoint_sha256 or self.plan.sha256,
                "evaluated": self.plan.evaluated,
                "simulated": self.plan.simulated,
                "train_run": str(e.get("train_run", "unknown")),
                "split_version": str(e.get("split_version", "unknown"))}
