"""What a training run reports about its checkpoint: health checks, validation loss, lineage (split version,
fingerprints, scene, code version) and the loss curve, for the `trained_policy` asset.

Entries are `name -> (kind, value)` with Dagster's metadata kinds ("text", "int", "float", "path", "md", "json",
"url"); defs/metadata.py turns them into MetadataValues, so no dagster import is needed here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tatbot_pipeline.digest import checkpoint_sha256
from tatbot_pipeline.display import sig
from tatbot_pipeline.plots import loss_curve, png_markdown
from tatbot_pipeline.training.health import HealthResult, run_health
from tatbot_pipeline.training.lineage import code_version, scene_snapshot, split_identity
from tatbot_pipeline.training.runner import TrainingRun, command_path
from tatbot_pipeline.training.val_loss import validation_losses

Entries = dict[str, tuple[str, Any]]


@dataclass(frozen=True)
class TrainingReport:
    summary: str
    first: Entries  # read first, after the summary
    last: Entries  # the long ones: command, config, fingerprints, scene, loss curve
    health: list[HealthResult]


def report_training(run: TrainingRun, train_root: Path, log: Callable[[str], None] = lambda line: None) -> TrainingReport:
    """Health checks, the validation loss of the saved checkpoints (when the split has a val side) and the entries."""
    health = run_health(run.metrics, train_root, run.checkpoint_dir)
    val_root = Path(train_root).parent / "val"
    val_loss = None
    if (val_root / "meta" / "info.json").is_file():
        log(f"validation loss of the saved checkpoints on {val_root}")
        val_loss = validation_losses(run.run_dir, val_root)
    first, last = training_entries(run, train_root, val_loss)
    summary = training_summary(run, val_loss, (sum(h.passed for h in health), len(health)))
    return TrainingReport(summary, first, last, health)


def training_summary(run: TrainingRun, val_loss: dict[int, float] | None, health: tuple[int, int]) -> str:
    """'tiny_smolvla, 200 steps: loss 1.21 -> 0.913, val loss 0.95; health 3/3'."""
    m = run.metrics
    losses = [x for x in m.loss if math.isfinite(x)]
    trend = f"loss {sig(losses[0])} -> {sig(losses[-1])}" if len(losses) > 1 else "no loss logged"
    val = f", val loss {sig(val_loss[max(val_loss)])}" if val_loss else ""
    resumed = f" (resumed at {run.resumed_from})" if run.resumed_from is not None else ""
    return f"{run.preset}, {run.steps} steps{resumed}: {trend}{val}; health {health[0]}/{health[1]}"


def training_entries(run: TrainingRun, train_root: Path, val_loss: dict[int, float] | None = None) -> tuple[Entries, Entries]:
    """(the entries to read first, the long ones to read last)."""
    split = split_identity(train_root)
    m = run.metrics
    first: Entries = {
        "steps": ("int", run.steps),
        "final_loss": ("float", sig(m.final_loss)) if m.final_loss is not None else ("text", "none logged"),
        "final_val_loss": ("float", sig(val_loss[max(val_loss)])) if val_loss else ("text", "n/a (no val split)"),
        "train_wall_s": ("float", sig(run.wall_s)),
        "resumed_from_step": ("int", run.resumed_from) if run.resumed_from is not None else ("text", "fresh run"),
        "preset": ("text", run.preset),
        "policy_type": ("text", run.policy_type),
        "split_version": ("text", split["version"]),
        "checkpoint": ("path", str(run.checkpoint_dir)),
        # Computed once, here: every later hand-over (evaluation, promotion, deploy, the node) checks these bytes.
        "checkpoint_sha256": ("text", checkpoint_sha256(run.checkpoint_dir)) if Path(run.checkpoint_dir).is_dir()
        else ("text", "none (no checkpoint saved)"),
        "split_path": ("path", split["source"]),
        "code_version": ("text", code_version()),
        "log": ("path", str(run.log_path)),
    }
    if m.wandb_url:
        first["wandb"] = ("url", m.wandb_url)
    script = command_path(run.log_path)
    last: Entries = {
        "command": ("path", str(script)) if run.argv and script.is_file() else ("text", "not retrained"),
        "train_config": ("json", _train_config(run.checkpoint_dir)),
        "split_fingerprints": ("json", split["fingerprints"]),
        "scene": ("json", json.loads(json.dumps(scene_snapshot(train_root) or {}, default=str))),
    }
    if len(m):
        fig = loss_curve(m.step, m.loss, m.grad_norm, val_loss=val_loss)
        last["loss_curve"] = ("md", png_markdown(fig, "loss"))
    return first, last


def _train_config(checkpoint: Path) -> dict:
    """The exact config lerobot-train ran with (its `train_config.json`), instead of its console dump."""
    try:
        return json.loads((Path(checkpoint) / "train_config.json").read_text())
    except (OSError, ValueError):
        return {}
