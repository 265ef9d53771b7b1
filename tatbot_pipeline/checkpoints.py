"""lerobot-train's checkpoint layout: `outputs/train/<run>/checkpoints/<step>/pretrained_model`.

Training writes it, the leaderboard names runs by it, and delivery names deployed copies by it: one reading of the
layout, below all three.
"""

from __future__ import annotations

from pathlib import Path


def last_checkpoint(run_dir: Path) -> Path:
    """`<run>/checkpoints/last/pretrained_model`, the dir `PreTrainedPolicy.from_pretrained` loads."""
    return Path(run_dir) / "checkpoints" / "last" / "pretrained_model"


def run_and_step(checkpoint: Path | str) -> tuple[str, str] | None:
    """(<run>, <step>) of lerobot-train's `.../<run>/checkpoints/<step>/pretrained_model`; None for other paths."""
    parts = Path(checkpoint).parts
    if len(parts) >= 4 and parts[-1] == "pretrained_model" and parts[-3] == "checkpoints":
        return parts[-4], parts[-2]
    return None


def run_name(checkpoint: Path | str) -> str:
    """`<run>`, with the step when it is not `last` (`<run> @ <step>`); the dir name for other paths."""
    found = run_and_step(checkpoint)
    if found is None:
        return Path(checkpoint).name
    run, step = found
    return run if step == "last" else f"{run} @ {step}"
