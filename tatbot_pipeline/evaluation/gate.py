"""The promotion gate and the leaderboard: which checkpoint the robot job may use by default.

`promoted.json` under the pipeline home names the promoted checkpoint; `leaderboard.json` keeps every evaluated one.
Both are small JSON files written atomically so a robot job reading them never sees half a file.

The latency rule depends on the inference mode the checkpoint will run in (inference/modes.py): the mode `vla_infer`
picks by default for the measured p95 chunk latency. Sync: one control period. Async: the chunk must land before the
queue runs dry, chunk after chunk — `(n_action_steps - margin) // 2` periods. The reasons and the leaderboard say
which mode was assumed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.files import write_atomic
from tatbot_pipeline.evaluation.offline import OfflineEval
from tatbot_pipeline.training.lineage import run_and_step
from tatbot_pipeline.inference.modes import ASYNC_MARGIN_STEPS, Mode, default_mode, latency_budget_s


@dataclass(frozen=True)
class Thresholds:
    """What a checkpoint must reach to be promoted. Latency budget 0: the budget of the inference mode the checkpoint
    will run in (one control period in sync mode; see `latency_rule`)."""

    max_mae: float = 0.15  # rad, mean over joints and frames
    max_joint_mae: float = 0.35  # rad, the worst single joint
    latency_budget_s: float = 0.0


@dataclass(frozen=True)
class LatencyRule:
    """The chunk latency budget applied, and the inference mode it assumed."""

    mode: Mode
    budget_s: float
    p95_s: float
    set_by: str  # how the budget was set, for the reason

    @property
    def passed(self) -> bool:
        return self.p95_s <= self.budget_s

    def reason(self, device: str) -> str:
        return (f"p95 chunk latency {self.p95_s * 1000:.1f} ms on {device} > budget {self.budget_s * 1000:.1f} ms "
                f"assuming {self.mode} inference ({self.set_by})")


def latency_rule(p95_s: float, fps: float, n_action_steps: int, budget_override_s: float = 0.0) -> LatencyRule:
    """Assume the mode `vla_infer` would pick by default for this latency; a lab-set budget overrides its budget."""
    mode = default_mode(p95_s, fps)
    if budget_override_s:
        return LatencyRule(mode, budget_override_s, p95_s, "latency_budget_ms set for the gate")
    budget = latency_budget_s(mode, fps, n_action_steps)
    if mode == "sync":
        how = f"one period at {fps:g} Hz"
    else:
        how = f"(n_action_steps {n_action_steps} - margin {ASYNC_MARGIN_STEPS}) // 2 periods at {fps:g} Hz"
    return LatencyRule(mode, budget, p95_s, how)


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
        return f"{self.name} {self.measured:.4g} {sign} {self.limit:.4g} {self.unit}{detail}"


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reasons: list[str]  # why not (empty when promoted)
    latency: LatencyRule | None = None
    criteria: tuple[Criterion, ...] = ()

    def headline(self) -> str:
        """'PROMOTED: MAE 0.108 ≤ 0.15 rad, …' — every criterion, measured against its limit."""
        verdict = "PROMOTED" if self.promoted else "NOT PROMOTED"
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
    return GateDecision(promoted=not reasons, reasons=reasons, latency=rule, criteria=criteria)


def _write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))


def leaderboard_entry(settings: PipelineSettings, checkpoint: Path | str) -> dict | None:
    """The leaderboard's record of `checkpoint` (same resolved path), None when it was never evaluated here."""
    path = settings.leaderboard_path
    if not path.exists():
        return None
    wanted = Path(checkpoint).resolve()
    entries = json.loads(path.read_text())
    return next((e for e in entries if e.get("checkpoint") and Path(e["checkpoint"]).resolve() == wanted), None)


def rollout_latency_problem(entry: dict, fps: int, device: str) -> tuple[str | None, Mode | None]:
    """Whether a checkpoint evaluated as `entry` is too slow for a rollout at `fps` on `device`, and the mode its
    measurement calls for. Entries from before chunk latency was measured hold a per-call p95: the old rule."""
    if entry.get("device") != device:
        return None, None
    p95_ms = entry.get("chunk_latency_p95_ms")
    override_s = (entry.get("thresholds") or {}).get("latency_budget_s") or 0.0
    if p95_ms is None:
        budget_ms = override_s * 1000 or 1000 / fps
        if entry["latency_p95_ms"] > budget_ms:
            return (f"p95 latency {entry['latency_p95_ms']:.1f} ms measured on {device} exceeds the {budget_ms:.0f} ms "
                    f"budget at {fps} Hz"), None
        return None, None
    rule = latency_rule(p95_ms / 1000, fps, int(entry.get("n_action_steps") or 1), override_s)
    return (None if rule.passed else rule.reason(device) + f" at {fps} Hz"), rule.mode


def read_promoted(settings: PipelineSettings) -> dict | None:
    """The promoted checkpoint's record ({"checkpoint": ..., ...}) or None when nothing was promoted yet."""
    path = settings.promoted_path
    return json.loads(path.read_text()) if path.exists() else None


def record(settings: PipelineSettings, result: OfflineEval, decision: GateDecision, thresholds: Thresholds, lineage: dict) -> list[dict]:
    """Add the evaluation to the leaderboard, promote it when the gate says so; return the leaderboard."""
    entry = {
        "checkpoint": result.checkpoint,
        "policy_type": result.policy_type,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mae": result.errors.mae,
        "mse": result.errors.mse,
        "worst_joint": result.errors.worst_joint[0],
        "worst_joint_mae": result.errors.worst_joint[1],
        "run": _run_name(result.checkpoint),
        "chunk_latency_p95_ms": result.latency.p95_s * 1000,
        "n_action_steps": result.n_action_steps,
        "inference_mode": decision.latency.mode if decision.latency else None,
        "latency_budget_ms": decision.latency.budget_s * 1000 if decision.latency else None,
        "device": result.device,
        "episodes": result.episodes,
        "promoted": decision.promoted,
        "reasons": decision.reasons,
        "thresholds": asdict(thresholds),
        **lineage,
    }
    path = settings.leaderboard_path
    board = json.loads(path.read_text()) if path.exists() else []
    board = [e for e in board if e["checkpoint"] != result.checkpoint] + [entry]
    _write_json(path, board)
    if decision.promoted:
        _write_json(settings.promoted_path, entry)
    return board


def _run_name(checkpoint: str) -> str:
    """`<run>` of `outputs/train/<run>/checkpoints/<step>/pretrained_model`, with the step when it is not `last`."""
    found = run_and_step(checkpoint)
    if found is None:
        return Path(checkpoint).name
    run, step = found
    return run if step == "last" else f"{run} @ {step}"


def leaderboard_markdown(board: list[dict], limit: int = 10) -> str:
    rows = ["| rank | run | policy | MAE (rad) | worst joint (MAE, rad) | p95 chunk latency (mode: budget) | promoted |",
            "|---|---|---|---|---|---|---|"]
    for rank, e in enumerate(sorted(board, key=lambda e: e["mae"])[:limit], 1):
        run = e.get("run") or _run_name(e["checkpoint"])
        worst = f"{e['worst_joint'].removesuffix('.pos')} {e['worst_joint_mae']:.4f}" if e.get("worst_joint") else \
            f"{e['worst_joint_mae']:.4f}"
        rows.append(f"| {rank} | {run} | {e['policy_type']} | {e['mae']:.4f} | {worst} | "
                    f"{_latency_cell(e)} | {'yes' if e['promoted'] else 'no: ' + '; '.join(e['reasons'])} |")
    return "\n".join(rows)


def _latency_cell(e: dict) -> str:
    if e.get("chunk_latency_p95_ms") is None:  # evaluated before chunk latency was measured: per-call p95
        return f"{e['latency_p95_ms']:.1f} ms per call"
    return f"{e['chunk_latency_p95_ms']:.1f} ms ({e['inference_mode']}: {e['latency_budget_ms']:.0f} ms)"
