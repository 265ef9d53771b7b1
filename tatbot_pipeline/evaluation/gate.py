"""The promotion gate and the leaderboard: which checkpoint the robot job may use by default.

`promoted.json` under the pipeline home names the promoted checkpoint; `leaderboard.json` keeps every evaluated one.
Both are small JSON files written atomically so a robot job reading them never sees half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from tatbot_pipeline.evaluation.offline import OfflineEval


@dataclass(frozen=True)
class Thresholds:
    """What a checkpoint must reach to be promoted. Latency budget 0 means one control period, 1/fps."""

    max_mae: float = 0.15  # rad, mean over joints and frames
    max_joint_mae: float = 0.35  # rad, the worst single joint
    latency_budget_s: float = 0.0


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reasons: list[str]  # why not (empty when promoted)


def decide(result: OfflineEval, thresholds: Thresholds, health_passed: bool, health_note: str = "") -> GateDecision:
    """Every reason a checkpoint may not go to the robot, collected, not stopped at the first."""
    reasons = []
    if not health_passed:
        reasons.append(f"training health checks did not pass{': ' + health_note if health_note else ''}")
    if result.errors.mae > thresholds.max_mae:
        reasons.append(f"mean action error {result.errors.mae:.3f} rad > {thresholds.max_mae}")
    worst = max(result.errors.mae_per_joint, key=result.errors.mae_per_joint.get)
    if result.errors.mae_per_joint[worst] > thresholds.max_joint_mae:
        reasons.append(f"{worst} error {result.errors.mae_per_joint[worst]:.3f} rad > {thresholds.max_joint_mae}")
    budget = thresholds.latency_budget_s or 1.0 / result.fps
    if result.latency.p95_s > budget:
        reasons.append(f"p95 latency {result.latency.p95_s * 1000:.1f} ms > budget {budget * 1000:.1f} ms on {result.device}")
    return GateDecision(promoted=not reasons, reasons=reasons)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def promoted_path(home: Path) -> Path:
    return Path(home) / "promoted.json"


def leaderboard_path(home: Path) -> Path:
    return Path(home) / "outputs" / "eval" / "leaderboard.json"


def read_promoted(home: Path) -> dict | None:
    """The promoted checkpoint's record ({"checkpoint": ..., ...}) or None when nothing was promoted yet."""
    path = promoted_path(home)
    return json.loads(path.read_text()) if path.exists() else None


def record(home: Path, result: OfflineEval, decision: GateDecision, thresholds: Thresholds, lineage: dict) -> list[dict]:
    """Add the evaluation to the leaderboard, promote it when the gate says so; return the leaderboard."""
    entry = {
        "checkpoint": result.checkpoint,
        "policy_type": result.policy_type,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mae": result.errors.mae,
        "mse": result.errors.mse,
        "worst_joint_mae": max(result.errors.mae_per_joint.values()),
        "latency_p95_ms": result.latency.p95_s * 1000,
        "device": result.device,
        "episodes": result.episodes,
        "promoted": decision.promoted,
        "reasons": decision.reasons,
        "thresholds": asdict(thresholds),
        **lineage,
    }
    path = leaderboard_path(home)
    board = json.loads(path.read_text()) if path.exists() else []
    board = [e for e in board if e["checkpoint"] != result.checkpoint] + [entry]
    _write_json(path, board)
    if decision.promoted:
        _write_json(promoted_path(home), entry)
    return board


def leaderboard_markdown(board: list[dict], limit: int = 10) -> str:
    rows = ["| rank | checkpoint | policy | MAE (rad) | worst joint | p95 latency | promoted |", "|---|---|---|---|---|---|---|"]
    for rank, e in enumerate(sorted(board, key=lambda e: e["mae"])[:limit], 1):
        short = "/".join(Path(e["checkpoint"]).parts[-4:-2]) or e["checkpoint"]
        rows.append(f"| {rank} | {short} | {e['policy_type']} | {e['mae']:.4f} | {e['worst_joint_mae']:.4f} | "
                    f"{e['latency_p95_ms']:.1f} ms | {'yes' if e['promoted'] else 'no: ' + '; '.join(e['reasons'])} |")
    return "\n".join(rows)
