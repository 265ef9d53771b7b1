"""Action-error and latency metrics: plain numpy on arrays, so they are checkable by hand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tatbot_pipeline.robot.spec import ARMS, JOINT_NAMES, arm_slice


@dataclass(frozen=True)
class ActionErrors:
    mse_per_joint: dict[str, float]
    mae_per_joint: dict[str, float]
    mae_per_arm: dict[str, float]
    mse_per_arm: dict[str, float]
    mae: float
    mse: float
    max_abs: float
    mae_per_chunk_step: list[float]  # error vs position inside the action chunk (0 = freshly predicted)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def action_errors(predicted: np.ndarray, recorded: np.ndarray, chunk_step: np.ndarray) -> ActionErrors:
    """Errors of predicted vs recorded actions, both (N, 14); `chunk_step[i]` is frame i's index within its chunk."""
    if predicted.shape != recorded.shape or predicted.ndim != 2:
        raise ValueError(f"predicted {predicted.shape} and recorded {recorded.shape} must both be (N, joints)")
    err = predicted.astype(np.float64) - recorded.astype(np.float64)
    sq, ab = err**2, np.abs(err)
    steps = int(chunk_step.max()) + 1 if len(chunk_step) else 0
    return ActionErrors(
        mse_per_joint=dict(zip(JOINT_NAMES, sq.mean(axis=0).tolist())),
        mae_per_joint=dict(zip(JOINT_NAMES, ab.mean(axis=0).tolist())),
        mae_per_arm={arm: float(ab[:, arm_slice(arm)].mean()) for arm in ARMS},
        mse_per_arm={arm: float(sq[:, arm_slice(arm)].mean()) for arm in ARMS},
        mae=float(ab.mean()),
        mse=float(sq.mean()),
        max_abs=float(ab.max()),
        mae_per_chunk_step=[float(ab[chunk_step == s].mean()) if (chunk_step == s).any() else float("nan") for s in range(steps)],
    )


@dataclass(frozen=True)
class Latency:
    mean_s: float
    p95_s: float
    max_s: float
    calls: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def latency(seconds: np.ndarray) -> Latency:
    """Summary of per-chunk compute times (offline.py times one call per chunk: the forward pass a rollout waits for)."""
    s = np.asarray(seconds, dtype=np.float64)
    return Latency(mean_s=float(s.mean()), p95_s=float(np.percentile(s, 95)), max_s=float(s.max()), calls=len(s))
