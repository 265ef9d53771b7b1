"""Tiny real LeRobot checkpoints for rollout tests and the bench (built in well under a second, no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_act_checkpoint(out_dir: Path, dataset_root: Path, chunk_size: int = 8) -> Path:
    """An untrained ACT policy with the dataset's features and stats, saved as lerobot-train saves one."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    meta = LeRobotDatasetMetadata(f"local/{Path(dataset_root).name}", root=dataset_root)
    cfg = ACTConfig(
        pretrained_backbone_weights=None, dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1,
        n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, chunk_size=chunk_size, n_action_steps=chunk_size,
        device="cpu", push_to_hub=False,
    )
    torch.manual_seed(0)
    policy = make_policy(cfg, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    for part in (policy, preprocessor, postprocessor):
        part.save_pretrained(out_dir)
    return out_dir


def poison_with_nan(checkpoint: Path, out_dir: Path) -> Path:
    """A copy of an ACT checkpoint whose action head outputs NaN: a policy gone bad, for the safety envelope."""
    return with_action_bias(checkpoint, out_dir, float("nan"))


def with_action_bias(checkpoint: Path, out_dir: Path, value: float) -> Path:
    """A copy of an ACT checkpoint whose action head outputs `value` (normalised units) for every joint: NaN for a
    policy gone bad, a large number for one that asks for moves far outside the joint limits."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, out_dir)
    weights = load_file(out_dir / "model.safetensors")
    head = [k for k in weights if k.endswith("action_head.bias")]
    assert head, f"no action_head.bias in {sorted(weights)[:5]}…"
    weights[head[0]] = torch.full_like(weights[head[0]], value)
    weight = [k for k in weights if k.endswith("action_head.weight")]
    weights[weight[0]] = torch.zeros_like(weights[weight[0]])  # the bias alone decides the action
    save_file(weights, out_dir / "model.safetensors", metadata={"format": "pt"})
    return out_dir
