"""How well a rollout went, as numbers and a verdict: the `eval_dataset` partition's metadata and its warn check.

A rollout that finished can still be a poor one: a policy the safety envelope had to correct on many steps, or arms
that lagged far behind their commands. The run succeeded, so this is a warning for the person reading the UI, never
a reason to move the robot differently.
"""

from __future__ import annotations

from dataclasses import dataclass

from tatbot_pipeline.inference.rollout import VLAInferOutput


@dataclass(frozen=True)
class QualityLimits:
    max_clamped_fraction: float = 0.25  # steps clamped to the joint limits (by more than the envelope's tolerance)
    max_rate_limited_fraction: float = 0.5  # steps slowed to the speed limit
    max_tracking_error_rad: float = 0.2  # previous command vs observed, any revolute joint


@dataclass(frozen=True)
class RolloutQuality:
    passed: bool
    reasons: list[str]  # what was too high (empty when passed)
    clamped_fraction: float
    rate_limited_fraction: float

    def describe(self) -> str:
        return "within limits" if self.passed else "; ".join(self.reasons)


def rollout_quality(out: VLAInferOutput, limits: QualityLimits = QualityLimits()) -> RolloutQuality:
    steps = max(out.num_steps, 1)
    clamped, rate_limited = out.actions_clamped / steps, out.actions_rate_limited / steps
    reasons = []
    if clamped > limits.max_clamped_fraction:
        reasons.append(f"{out.actions_clamped} of {out.num_steps} actions clamped to the joint limits "
                       f"({clamped:.0%} > {limits.max_clamped_fraction:.0%})")
    if rate_limited > limits.max_rate_limited_fraction:
        reasons.append(f"{out.actions_rate_limited} of {out.num_steps} actions slowed to the speed limit "
                       f"({rate_limited:.0%} > {limits.max_rate_limited_fraction:.0%})")
    tracking = out.max_tracking_error_rad
    if tracking is not None and tracking > limits.max_tracking_error_rad:
        reasons.append(f"tracking error up to {tracking:.3f} rad > {limits.max_tracking_error_rad} rad")
    return RolloutQuality(not reasons, reasons, clamped, rate_limited)
