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
    open_loop = open_loop_reasons(entry) if not entry.get("open_loop_passed") else []
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


def open_loop_reasons(entry: dict) -> list[str]:
    """Why the open-loop gate failed an entry (its reasons without the sim's and without "awaiting sim")."""
    return [r for r in entry.get("reasons", []) if not r.startswith("awaiting sim_evaluation")
            and not r.startswith("sim: ")]


# What policy_evaluation's page says of promotion: it decides only the open-loop half, and anything it said about the
# promotion itself would be stale once sim_evaluation runs (which writes promoted.json).
DECIDED_BY_SIM = "decided by sim_evaluation"


def is_promoted(entry: dict, promoted: dict | None) -> bool:
    """Whether `promoted` (promoted.json) names the entry's checkpoint: by digest when both have one, else by path."""
    if not promoted:
        return False
    if entry.get("checkpoint_sha256") and promoted.get("checkpoint_sha256"):
        return entry["checkpoint_sha256"] == promoted["checkpoint_sha256"]
    return Path(str(entry.get("checkpoint"))).resolve() == Path(str(promoted.get("checkpoint"))).resolve()


def promotion_status(entry: dict, promoted: dict | None, name: str = "") -> str:
    """The one wording of a checkpoint's promotion, on every page and tag that shows it, from the promotion record
    (`promoted.json`, the truth) and the checkpoint's leaderboard entry: 'PROMOTED [<name>] [under <gate>]',
    'superseded by <run>', 'awaiting sim_evaluation' or 'NOT PROMOTED: <reasons>'. `name` names the promoted
    checkpoint (a summary line; a leaderboard row has it in its own column)."""
    named = f" {name}" if name else ""
    if is_promoted(entry, promoted):
        gate = ((promoted or {}).get("sim") or {}).get("gate_name")
        return f"PROMOTED{named}" + (f" under {gate}" if gate else "")
    if entry.get("promoted"):  # passed both gates once; promoted.json names another checkpoint since (or none)
        newer = promoted and (promoted.get("run") or run_name(promoted["checkpoint"]))
        return f"superseded by {newer}" if newer else "NOT PROMOTED: promoted.json names no checkpoint"
    if entry.get("open_loop_passed") and not entry.get("sim"):
        return "awaiting sim_evaluation"
    return "NOT PROMOTED: " + "; ".join(entry.get("reasons") or ["no reason recorded"])[:300]


def promotion_tag(entry: dict, promoted: dict | None) -> str:
    """`promotion_status` short enough for the Runs list's tag chips: the verdict without reasons or gate (the
    run's page has them): PROMOTED, NOT PROMOTED, awaiting sim_evaluation, superseded by <run>."""
    return promotion_status(entry, promoted).split(":")[0].split(" under ")[0]


def leaderboard_markdown(board: list[dict], promoted: dict | None, limit: int = 10) -> str:
    """Ranked by open-loop MAE, with each checkpoint's promotion as `promotion_status` words it; entries only a sim
    evaluation knows (never judged open-loop) are left out."""
    # Narrow enough for the asset page at 1600 px: the worst joint is in each evaluation's gate table.
    rows = ["| # | checkpoint | MAE rad | chunk p95 ms | sim tip p95 mm | promotion |", "|---|---|---|---|---|---|"]
    for rank, e in enumerate(_ranked(board)[:limit], 1):
        rows.append(f"| {rank} | {_run(e)} | {e['mae']:.4f} | {_latency_cell(e)} | {_sim_cell(e)} | "
                    f"{_cell(promotion_status(e, promoted))} |")
    return "\n".join(rows)


def open_loop_board_markdown(board: list[dict], limit: int = 10) -> str:
    """policy_evaluation's leaderboard: only what that page decides (the open-loop gate); promotion is named as
    sim_evaluation's, never guessed here (a guess made now would be stale after the sim runs)."""
    rows = ["| # | checkpoint | MAE rad | chunk p95 ms | open-loop gate |", "|---|---|---|---|---|"]
    for rank, e in enumerate(_ranked(board)[:limit], 1):
        passed = e.get("open_loop_passed", e.get("promoted"))  # entries from before the sim gate: promoted = passed
        verdict = "pass" if passed else "FAIL: " + "; ".join(open_loop_reasons(e) or ["no reason recorded"])
        rows.append(f"| {rank} | {_run(e)} | {e['mae']:.4f} | {_latency_cell(e)} | {_cell(verdict)} |")
    return "\n".join(rows) + f"\n\npromotion: {DECIDED_BY_SIM}"


def _ranked(board: list[dict]) -> list[dict]:
    return sorted((e for e in board if e.get("mae") is not None), key=lambda e: e["mae"])


def _run(e: dict) -> str:
    return e.get("run") or run_name(e["checkpoint"])


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
