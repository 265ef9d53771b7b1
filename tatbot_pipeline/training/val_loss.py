"""Validation loss of a training run: the policy's own training loss on the val split, at each saved checkpoint.

lerobot-train logs the training loss only; laid over it, the val loss shows whether a run learned strokes or memorised
episodes (the val split holds whole episodes the trainer never saw). Every checkpoint is scored on the same fixed
samples with the same noise seed, through the checkpoint's own preprocessor, exactly as `lerobot-train` computes its
loss (`policy.forward(preprocessor(batch))`), so the two curves are comparable.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^\d+$")


def saved_checkpoints(run_dir: Path, limit: int = 10) -> dict[int, Path]:
    """step -> pretrained_model dir of the run's saved checkpoints, at most `limit` of them evenly spaced (the last
    one always included): scoring a few hundred checkpoints would cost more than the training of a tiny model."""
    found = {int(p.parent.name): p for p in Path(run_dir).glob("checkpoints/*/pretrained_model")
             if _STEP_DIR.match(p.parent.name) and (p / "model.safetensors").is_file()}
    steps = sorted(found)
    if len(steps) > limit:
        keep = {steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, limit)}
        steps = sorted(keep)
    return {s: found[s] for s in steps}


def validation_losses(run_dir: Path, val_root: Path, device: str = "cpu", max_samples: int = 32,
                      batch_size: int = 8, seed: int = 0, limit: int = 10) -> dict[int, float]:
    """step -> mean loss on up to `max_samples` fixed samples of the val split, for each saved checkpoint."""
    import torch

    checkpoints = saved_checkpoints(run_dir, limit)
    if not checkpoints:
        return {}
    dataset = _dataset(next(iter(checkpoints.values())), val_root)
    indices = np.linspace(0, len(dataset) - 1, num=min(max_samples, len(dataset))).round().astype(int)
    batches = [torch.utils.data.default_collate([dataset[int(i)] for i in indices[k:k + batch_size]])
               for k in range(0, len(indices), batch_size)]
    losses = {}
    for step, checkpoint in checkpoints.items():
        losses[step] = _checkpoint_loss(checkpoint, batches, device, seed)
        log.info("val loss at step %d: %.4f", step, losses[step])
    return losses


def _dataset(checkpoint: Path, val_root: Path):
    import lerobot.policies  # noqa: F401 - registers the policy config classes `from_pretrained` dispatches to
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    meta = LeRobotDatasetMetadata(f"local/{Path(val_root).name}", root=val_root)
    return LeRobotDataset(meta.repo_id, root=val_root, delta_timestamps=resolve_delta_timestamps(cfg, meta),
                          video_backend="pyav")


def _checkpoint_loss(checkpoint: Path, batches: list[dict], device: str, seed: int) -> float:
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    cfg.device = device
    policy = get_policy_class(cfg.type).from_pretrained(checkpoint, config=cfg)
    policy.eval()
    preprocessor, _ = make_pre_post_processors(
        cfg, pretrained_path=str(checkpoint), preprocessor_overrides={"device_processor": {"device": device}})
    torch.manual_seed(seed)  # flow-matching losses draw noise: the same draws for every checkpoint
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, _ = policy.forward(preprocessor(dict(batch)))
            n = len(batch["action"])
            total += float(loss) * n
            count += n
    return total / count
