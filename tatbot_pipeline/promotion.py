"""The leaderboard and the promotion store: which checkpoint the robot job may use by default.

`promoted.json` under the pipeline home names the promoted checkpoint; `outputs/eval/leaderboard.json` keeps every
evaluated one. Both are small JSON files written atomically so a robot job reading them never sees half a file. The
gate (evaluation/gate.py) decides and writes through `add_to_leaderboard`; the rollout plan and `vla_infer` only
read, so the robot node's code needs nothing from evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from tatbot_pipeline.checkpoints import run_name
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.files import write_atomic
from tatbot_pipeline.policy.modes import Mode, latency_rule


def _write_json(path: Path, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))


def leaderboard_entry(settings: PipelineSettings, checkpoint: Path | str | None = None,
                      sha256: str | None = None) -> dict | None:
    """The leaderboard's record of a checkpoint, by content when its digest is known (a deployed copy under another
    path is the same checkpoint), else by resolved path; None when it was never evaluated here."""
    path = settings.leaderboard_path
    if not path.exists():
        return None
    entries = json.loads(path.read_text())
    if sha256:
        found = next((e for e in reversed(entries) if e.get("checkpoint_sha256") == sha256), None)
        if found is not None or checkpoint is None:
            return found
    wanted = Path(checkpoint).resolve()
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


def add_to_leaderboard(settings: PipelineSettings, entry: dict) -> list[dict]:
    """Put `entry` on the leaderboard (replacing an earlier evaluation of the same checkpoint) and make it the
    promoted checkpoint when `entry["promoted"]`; return the leaderboard."""
    path = settings.leaderboard_path
    board = json.loads(path.read_text()) if path.exists() else []
    board = [e for e in board if e["checkpoint"] != entry["checkpoint"]] + [entry]
    _write_json(path, board)
    if entry["promoted"]:
        _write_json(settings.promoted_path, entry)
    return board


def read_leaderboard(settings: PipelineSettings) -> list[dict]:
    path = settings.leaderboard_path
    return json.loads(path.read_text()) if path.exists() else []


def record_sim(settings: PipelineSettings, checkpoint: str, sha256: str, sim: dict) -> dict:
    """Put a sim evaluation's figures (`sim`: passed, strokes, tip_error_mm_p95, reasons, …) on the checkpoint's
    leaderboard entry, found by digest; promote it when both its open-loop and its sim gate passed. Returns the
    entry. A checkpoint no policy_evaluation judged gets an entry that says so, and is never promoted."""
    board = read_leaderboard(settings)
    entry = next((e for e in reversed(board) if e.get("checkpoint_sha256") == sha256), None)
    if entry is None:
        entry = {"checkpoint": checkpoint, "checkpoint_sha256": sha256, "open_loop_passed": False,
                 "reasons": ["no policy_evaluation judged these bytes"]}
    open_loop = [r for r in entry.get("reasons", []) if not r.startswith("awaiting sim_evaluation")
                 and not r.startswith("sim: ")] if not entry.get("open_loop_passed") else []
    entry = {**entry, "sim": sim, "promoted": bool(entry.get("open_loop_passed") and sim["passed"]),
             "reasons": open_loop + [f"sim: {r}" for r in sim.get("reasons", [])]}
    if entry["promoted"]:
        entry["reasons"] = []
    _store(settings, board, entry)
    return entry


def _store(settings: PipelineSettings, board: list[dict], entry: dict) -> None:
    board = [e for e in board if e.get("checkpoint_sha256") != entry["checkpoint_sha256"]] + [entry]
    _write_json(settings.leaderboard_path, board)
    if entry["promoted"]:
        _write_json(settings.promoted_path, entry)


def simulated(entry: dict | None) -> bool:
    """Whether a leaderboard entry records a passing sim_evaluation of its checkpoint."""
    return bool(entry and (entry.get("sim") or {}).get("passed"))


def leaderboard_markdown(board: list[dict], limit: int = 10) -> str:
    """Ranked by open-loop MAE; entries only a sim evaluation knows (never judged open-loop) are left out."""
    # Narrow enough for the asset page at 1600 px: the worst joint is in each evaluation's gate table.
    rows = ["| # | checkpoint | MAE rad | chunk p95 ms | sim tip p95 mm | promoted |", "|---|---|---|---|---|---|"]
    ranked = sorted((e for e in board if e.get("mae") is not None), key=lambda e: e["mae"])
    for rank, e in enumerate(ranked[:limit], 1):
        run = e.get("run") or run_name(e["checkpoint"])
        rows.append(f"| {rank} | {run} | {e['mae']:.4f} | "
                    f"{_latency_cell(e)} | {_sim_cell(e)} | "
                    f"{'yes' if e['promoted'] else 'no: ' + '; '.join(e['reasons'])} |")
    return "\n".join(rows)


def _sim_cell(e: dict) -> str:
    sim = e.get("sim")
    if not sim:
        return "not simulated"
    p95 = sim.get("tip_error_mm_p95")
    under = f", under {sim['gate_name']}" if sim.get("gate_name") else ""  # limits set for that run, not the lab's
    return (f"{'pass' if sim['passed'] else 'FAIL'} {'n/a' if p95 is None else f'{p95:.1f}'} ({sim['strokes']} "
            f"strokes{under})")


def _latency_cell(e: dict) -> str:
    if e.get("chunk_latency_p95_ms") is None:  # evaluated before chunk latency was measured: per-call p95
        return f"{e['latency_p95_ms']:.0f} per call"
    return f"{e['chunk_latency_p95_ms']:.0f} {e['inference_mode']} (≤ {e['latency_budget_ms']:.0f})"
