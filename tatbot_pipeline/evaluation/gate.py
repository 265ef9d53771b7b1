"""The promotion gate: whether an evaluated checkpoint may go to the robot by default.

Its thresholds come from plain settings (config.py: `gate_overrides`, env TATBOT_GATE_*) and the launchpad; its
decision goes on the leaderboard and, when promoted, into `promoted.json` (both kept by promotion.py).

The latency rule depends on the inference mode the checkpoint will run in (policy/modes.py): the mode `vla_infer`
picks by default for the measured p95 chunk latency. Sync: one control period. Async: the chunk must land before the
queue runs dry, chunk after chunk — `(n_action_steps - margin) // 2` periods. The reasons and the leaderboard say
which mode was assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from tatbot_pipeline.checkpoints import run_name
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.evaluation.offline import OfflineEval
from tatbot_pipeline.policy.modes import LatencyRule, latency_rule
from tatbot_pipeline.promotion import add_to_leaderboard


@dataclass(frozen=True)
class Thresholds:
    """What a checkpoint must reach to be promoted. Latency budget 0: the budget of the inference mode the checkpoint
    will run in (one control period in sync mode; see `latency_rule`)."""

    max_mae: float = 0.15  # rad, mean over joints and frames
    max_joint_mae: float = 0.35  # rad, the worst single joint
    latency_budget_s: float = 0.0

    @classmethod
    def for_lab(cls, settings: PipelineSettings, **chosen: float | None) -> "Thresholds":
        """The lab's gate (TATBOT_GATE_* over these defaults), with what a launchpad chose (None: not chosen) on top."""
        values = {**settings.gate_overrides, **{k: v for k, v in chosen.items() if v is not None}}
        return cls(**values)


@dataclass(frozen=True)
class Criterion:
    """One rule of the gate, as measured: shown to the user as `name: measured <= limit unit (pass|fail)`."""

    name: str
    measured: float | None  # None: not a number (the health checks)
    limit: float | None
    unit: str
    passed: bool
    detail: str = ""  # e.g. which joint, which inference mode, which checks failed

    def describe(self) -> str:
        if self.measured is None:
            return f"{self.name} {self.detail}"
        sign = "≤" if self.passed else ">"
        detail = f" ({self.detail})" if self.detail else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.name} {self.measured:.4g} {sign} {self.limit:.4g}{unit}{detail}"


@dataclass(frozen=True)
class GateDecision:
    """The open-loop half of promotion (replayed held-out strokes). A checkpoint that passes it is promoted only once
    its sim_evaluation passes too (sim_gate.py, promotion.record_sim)."""

    passed: bool
    reasons: list[str]  # why not (empty when passed)
    latency: LatencyRule | None = None
    criteria: tuple[Criterion, ...] = ()

    def headline(self) -> str:
        """'OPEN-LOOP GATE PASSED: MAE 0.108 ≤ 0.15 rad, …' — every criterion, measured against its limit."""
        verdict = "OPEN-LOOP GATE PASSED" if self.passed else "OPEN-LOOP GATE FAILED"
        return f"{verdict}: " + ", ".join(c.describe() for c in self.criteria)


def decide(result: OfflineEval, thresholds: Thresholds, health_passed: bool, health_note: str = "",
           health_count: str = "") -> GateDecision:
    """Every criterion measured and every reason a checkpoint may not go to the robot, collected, not stopped at the
    first."""
    worst, worst_mae = result.errors.worst_joint
    rule = latency_rule(result.latency.p95_s, result.fps, result.n_action_steps, thresholds.latency_budget_s)
    criteria = (
        Criterion("health", None, None, "", health_passed,
                  (health_count or "passed") if health_passed else f"failed: {health_note or 'see trained_policy'}"),
        Criterion("MAE", result.errors.mae, thresholds.max_mae, "rad", result.errors.mae <= thresholds.max_mae),
        Criterion("worst joint MAE", worst_mae, thresholds.max_joint_mae, "rad", worst_mae <= thresholds.max_joint_mae,
                  worst.removesuffix(".pos")),
        Criterion("chunk latency p95", rule.p95_s * 1000, rule.budget_s * 1000, "ms", rule.passed,
                  f"{rule.mode} inference on {result.device}"),
    )
    reasons = []
    if not health_passed:
        reasons.append(f"training health checks did not pass{': ' + health_note if health_note else ''}")
    if result.errors.mae > thresholds.max_mae:
        reasons.append(f"mean action error {result.errors.mae:.3f} rad > {thresholds.max_mae}")
    if worst_mae > thresholds.max_joint_mae:
        reasons.append(f"{worst} error {worst_mae:.3f} rad > {thresholds.max_joint_mae}")
    if not rule.passed:
        reasons.append(rule.reason(result.device))
    return GateDecision(passed=not reasons, reasons=reasons, latency=rule, criteria=criteria)


AWAITING_SIM = "awaiting sim_evaluation (closed loop on the simulated arms)"


def record(settings: PipelineSettings, result: OfflineEval, decision: GateDecision, thresholds: Thresholds,
           lineage: dict) -> list[dict]:
    """Add the evaluation to the leaderboard; return the leaderboard. Not promoted yet, whatever the open-loop gate
    says: promotion waits for the checkpoint's sim_evaluation (promotion.record_sim)."""
    entry = {
        "checkpoint": result.checkpoint,
        "policy_type": result.policy_type,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mae": result.errors.mae,
        "mse": result.errors.mse,
        "worst_joint": result.errors.worst_joint[0],
        "worst_joint_mae": result.errors.worst_joint[1],
        "run": run_name(result.checkpoint),
        "chunk_latency_p95_ms": result.latency.p95_s * 1000,
        "n_action_steps": result.n_action_steps,
        "inference_mode": decision.latency.mode if decision.latency else None,
        "latency_budget_ms": decision.latency.budget_s * 1000 if decision.latency else None,
        "device": result.device,
        "episodes": result.episodes,
        "open_loop_passed": decision.passed,
        "promoted": False,
        "reasons": decision.reasons or [AWAITING_SIM],
        "thresholds": asdict(thresholds),
        **lineage,
    }
    return add_to_leaderboard(settings, entry)
