"""Health verdicts of a training run: did it learn, did it stay numerically sane, did it see the data we think.

Each check returns a `HealthResult` (passed + a message a user can act on + numbers for the UI); the Dagster layer
turns them into blocking asset checks, so a failed one stops promotion of the checkpoint.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER
from tatbot_pipeline.robot.spec import RECORDED_LIMIT_TOLERANCE as LIMIT_TOLERANCE
from tatbot_pipeline.training.train_log import MetricsSeries



# The health checks `run_health` runs, by name: trained_policy's blocking asset checks, and the gate's "health".
HEALTH_CHECKS = ("loss_decreased", "grad_norm_stable", "batch_sane")


@dataclass(frozen=True)
class HealthResult:
    name: str
    passed: bool
    message: str
    details: dict = field(default_factory=dict)


def loss_decreased(series: MetricsSeries, min_points: int = 4) -> HealthResult:
    """Mean loss of the last quarter of logged steps is below that of the first quarter, and every loss is finite.

    Quarters rather than first/last point: single-batch losses of a flow-matching policy are noisy.
    """
    name = "loss_decreased"
    losses = series.loss
    if len(losses) < min_points:
        return HealthResult(name, False, f"only {len(losses)} logged losses (need {min_points}): lower --log_freq "
                            "or train more steps", {"points": len(losses)})
    bad = [s for s, v in zip(series.step, losses) if not math.isfinite(v)]
    if bad:
        return HealthResult(name, False, f"loss is not finite at steps {bad[:5]}: the run diverged", {"nan_steps": bad})
    k = max(1, len(losses) // 4)
    first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
    details = {"first_quarter_loss": first, "last_quarter_loss": last, "points": len(losses)}
    if last < first:
        return HealthResult(name, True, f"loss fell from {first:.4g} to {last:.4g}", details)
    return HealthResult(name, False, f"loss did not fall: {first:.4g} -> {last:.4g} (learning rate too high or "
                        "too low, or labels broken?)", details)


def grad_norm_stable(series: MetricsSeries, max_norm: float = 1e3, max_growth: float = 10.0) -> HealthResult:
    """Every gradient norm is finite, below `max_norm`, and the late median is within `max_growth`x the early one."""
    name = "grad_norm_stable"
    norms = series.grad_norm
    if not norms:
        return HealthResult(name, False, "no gradient norms logged", {})
    bad = [s for s, v in zip(series.step, norms) if not math.isfinite(v)]
    if bad:
        return HealthResult(name, False, f"gradient norm is not finite at steps {bad[:5]}", {"nan_steps": bad})
    k = max(1, len(norms) // 4)
    early, late, peak = statistics.median(norms[:k]), statistics.median(norms[-k:]), max(norms)
    details = {"early_median": early, "late_median": late, "max": peak}
    if peak > max_norm:
        return HealthResult(name, False, f"gradient norm reached {peak:.4g} > {max_norm:g}: exploding", details)
    if early > 0 and late > max_growth * early:
        return HealthResult(name, False, f"gradient norm grew {late / early:.1f}x ({early:.3g} -> {late:.3g})", details)
    return HealthResult(name, True, f"gradient norm finite, max {peak:.3g}, median {early:.3g} -> {late:.3g}", details)


def batch_sane(
    dataset_root: Path,
    checkpoint_dir: Path,
    batch_size: int = 4,
    lower: np.ndarray = JOINT_LOWER,
    upper: np.ndarray = JOINT_UPPER,
) -> HealthResult:
    """Sample a batch the way the trainer does and check shapes, action/state ranges and the saved normalisation stats.

    Uses the checkpoint's own config (chunk size, input features), so it checks what the policy was really fed.
    """
    import lerobot.policies  # noqa: F401 - registers the policy config classes `from_pretrained` dispatches to
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    name = "batch_sane"
    cfg = PreTrainedConfig.from_pretrained(checkpoint_dir)
    meta = LeRobotDatasetMetadata(f"local/{Path(dataset_root).name}", root=dataset_root)
    dataset = LeRobotDataset(
        meta.repo_id, root=dataset_root, delta_timestamps=resolve_delta_timestamps(cfg, meta), video_backend="pyav"
    )
    indices = np.linspace(0, len(dataset) - 1, num=min(batch_size, len(dataset))).round().astype(int)
    batch = torch.utils.data.default_collate([dataset[int(i)] for i in indices])
    problems: list[str] = []
    n = len(indices)

    for key, feature in cfg.image_features.items():
        if key not in batch:
            problems.append(f"{key}: missing from the batch")
            continue
        img = batch[key]
        want = (n, 1, *feature.shape) if img.ndim == 5 else (n, *feature.shape)
        if tuple(img.shape) != want:
            problems.append(f"{key}: shape {tuple(img.shape)}, expected {want}")
        if not torch.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            problems.append(f"{key}: pixel values outside [0, 1]")
    if not cfg.image_features:
        problems.append("the policy has no image inputs (SmolVLA needs at least one camera)")

    action = batch["action"]
    want = (n, cfg.chunk_size, len(JOINT_NAMES))
    if tuple(action.shape) != want:
        problems.append(f"action: shape {tuple(action.shape)}, expected {want}")
    for key in ("action", "observation.state"):
        values = batch[key].reshape(-1, batch[key].shape[-1]).numpy()
        problems += _range_problems(key, values, lower, upper)
    problems += _stats_problems(Path(checkpoint_dir), lower, upper)

    details = {"batch_size": n, "chunk_size": cfg.chunk_size, "image_keys": sorted(cfg.image_features)}
    if problems:
        return HealthResult(name, False, "; ".join(problems[:8]), {**details, "problems": problems})
    return HealthResult(name, True, f"{n} samples: shapes, joint ranges and normalisation stats as expected", details)


def _range_problems(key: str, values: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> list[str]:
    if not np.isfinite(values).all():
        return [f"{key}: contains NaN/inf"]
    out = []
    for j, joint in enumerate(JOINT_NAMES):
        lo, hi = values[:, j].min(), values[:, j].max()
        if lo < lower[j] - LIMIT_TOLERANCE or hi > upper[j] + LIMIT_TOLERANCE:
            out.append(f"{key} {joint}: range [{lo:.4g}, {hi:.4g}] outside URDF limits [{lower[j]:.4g}, {upper[j]:.4g}]")
    return out


def _stats_problems(checkpoint_dir: Path, lower: np.ndarray, upper: np.ndarray) -> list[str]:
    """The normaliser stats saved with the checkpoint must be finite, with means inside the joint limits."""
    from safetensors.numpy import load_file

    files = sorted(checkpoint_dir.glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    if not files:
        return [f"{checkpoint_dir}: no normalizer stats saved with the checkpoint"]
    stats = load_file(files[0])
    out = []
    for key in ("action", "observation.state"):
        mean, std = stats.get(f"{key}.mean"), stats.get(f"{key}.std")
        if mean is None or std is None:
            out.append(f"{key}: mean/std missing from the normalizer stats")
            continue
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std < 0).any():
            out.append(f"{key}: normalizer stats not finite or negative std")
        elif (mean < lower - LIMIT_TOLERANCE).any() or (mean > upper + LIMIT_TOLERANCE).any():
            out.append(f"{key}: normalizer mean outside URDF limits")
        elif not (std > 0).any():
            out.append(f"{key}: zero std on every joint (the robot never moved?)")
    return out


def run_health(metrics: MetricsSeries, dataset_root: Path, checkpoint_dir: Path) -> list[HealthResult]:
    """Every health verdict of one training run, in a stable order."""
    return [loss_decreased(metrics), grad_norm_stable(metrics), batch_sane(dataset_root, checkpoint_dir)]


def health_of_run(latest: dict[str, tuple[str, str]], run_id: str) -> tuple[bool, str]:
    """Whether every health check passed in the run that produced a checkpoint, and what did not: `latest` maps each
    of HEALTH_CHECKS to (the run it was last evaluated in, its status: "succeeded", "failed", ...); a check that was
    never evaluated is missing."""
    problems = []
    for name in HEALTH_CHECKS:
        found = latest.get(name)
        if found is None or found[0] != run_id:
            problems.append(f"{name} not evaluated for this checkpoint")
        elif found[1] != "succeeded":  # failed: the check ran and did not pass
            problems.append(f"{name} {found[1]}")
    return not problems, ", ".join(problems)
