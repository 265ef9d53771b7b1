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
    # Joints the policy does not predict (constant in its training data, e.g. grippers that hold the needle): their
    # error is ~0 by construction, so they are shown as n/a and left out of every mean above.
    not_predicted: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return self.__dict__.copy()

    @property
    def worst_joint(self) -> tuple[str, float]:
        """The predicted joint with the largest MAE, and that MAE."""
        judged = {j: v for j, v in self.mae_per_joint.items() if j not in self.not_predicted} or self.mae_per_joint
        name = max(judged, key=judged.get)
        return name, judged[name]


def action_errors(predicted: np.ndarray, recorded: np.ndarray, chunk_step: np.ndarray,
                  not_predicted: tuple[str, ...] = ()) -> ActionErrors:
    """Errors of predicted vs recorded actions, both (N, 14); `chunk_step[i]` is frame i's index within its chunk.
    Means are over the predicted joints (all but `not_predicted`)."""
    if predicted.shape != recorded.shape or predicted.ndim != 2:
        raise ValueError(f"predicted {predicted.shape} and recorded {recorded.shape} must both be (N, joints)")
    err = predicted.astype(np.float64) - recorded.astype(np.float64)
    sq, ab = err**2, np.abs(err)
    keep = np.array([j not in not_predicted for j in JOINT_NAMES])
    if not keep.any():
        keep[:] = True
    steps = int(chunk_step.max()) + 1 if len(chunk_step) else 0

    def arm_mean(values: np.ndarray, arm: str) -> float:
        cols = keep[arm_slice(arm)]
        return float(values[:, arm_slice(arm)][:, cols].mean()) if cols.any() else float("nan")

    return ActionErrors(
        mse_per_joint=dict(zip(JOINT_NAMES, sq.mean(axis=0).tolist())),
        mae_per_joint=dict(zip(JOINT_NAMES, ab.mean(axis=0).tolist())),
        mae_per_arm={arm: arm_mean(ab, arm) for arm in ARMS},
        mse_per_arm={arm: arm_mean(sq, arm) for arm in ARMS},
        mae=float(ab[:, keep].mean()),
        mse=float(sq[:, keep].mean()),
        max_abs=float(ab[:, keep].max()),
        mae_per_chunk_step=[float(ab[chunk_step == s][:, keep].mean()) if (chunk_step == s).any() else float("nan")
                            for s in range(steps)],
        not_predicted=tuple(j for j, k in zip(JOINT_NAMES, keep) if not k),
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
