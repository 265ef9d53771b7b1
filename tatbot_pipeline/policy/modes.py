"""The two inference modes of a rollout, which one a checkpoint gets by default, and the chunk latency each can take.

- sync: the control thread computes a new chunk when the last one runs out (LeRobot's `select_action`); the step at
  every chunk seam is sent late by the whole chunk latency, and a chunk slower than one period misses the tick.
- async: a worker computes the next chunk from the latest observation while the current one executes (chunks.py);
  the control thread only pops, checks and sends.

Async replaces the queue with the new chunk minus the actions executed while it was computed (replace-with-delay, as
LeRobot's RTC `ActionQueue` does). A chunk of n actions that took d periods leaves n - d to execute, and the next
chunk takes d periods again, so keeping up needs 2 d + margin <= n: the Real-Time Chunking paper's d <= H - s with
s >= d. That, not d <= n - margin, is the async latency budget; `latency_rule` applies it to a measured latency for
the promotion gate (evaluation/gate.py) and the rollout plan (promotion.py: rollout_latency_problem).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["sync", "async"]
Requested = Literal["auto", "sync", "async"]

# auto picks async when a chunk takes more than this fraction of a control period: a seam that late (25 ms at
# 10 Hz) is five times the 5 ms send-jitter target, at every chunk boundary.
ASYNC_ABOVE_PERIOD_FRACTION = 0.25
# Actions still queued when the next chunk lands, beyond the ones executed while it was computed.
ASYNC_MARGIN_STEPS = 1


def default_mode(chunk_p95_s: float, fps: float) -> Mode:
    return "async" if chunk_p95_s > ASYNC_ABOVE_PERIOD_FRACTION / fps else "sync"


def delay_steps(latency_s: float, fps: float) -> int:
    """Control ticks that pass while a chunk that takes `latency_s` is computed (at most)."""
    return math.ceil(latency_s * fps - 1e-9)


def async_max_delay(n_action_steps: int, margin: int = ASYNC_MARGIN_STEPS) -> int:
    """The most ticks a chunk may take in async mode and still land before the queue runs dry, chunk after chunk."""
    return max(0, (n_action_steps - margin) // 2)


def latency_budget_s(mode: Mode, fps: float, n_action_steps: int) -> float:
    """p95 chunk latency a checkpoint may have at `fps`: one period in sync, `async_max_delay` periods in async."""
    return 1.0 / fps if mode == "sync" else async_max_delay(n_action_steps) / fps


def trigger_remaining(latency_max_s: float, fps: float, n_action_steps: int) -> int:
    """Start the next chunk when this many actions are left: enough for the slowest chunk seen so far plus the
    margin, and never later than half the chunk, so a chunk up to the async budget (or a latency spike) still lands."""
    return max(delay_steps(latency_max_s, fps) + ASYNC_MARGIN_STEPS, math.ceil(n_action_steps / 2))


@dataclass(frozen=True)
class ModeChoice:
    """The mode a rollout runs in and the measurement behind it."""

    mode: Mode
    chunk_p95_s: float
    measured_by: str  # "the warm-up" or "policy_evaluation"
    requested: bool = False  # the caller asked for this mode; otherwise the default for the measurement

    def describe(self) -> str:
        return (f"{self.mode} inference ({'requested' if self.requested else 'default'}; chunk inference p95 "
                f"{self.chunk_p95_s * 1000:.0f} ms, measured by {self.measured_by})")


@dataclass(frozen=True)
class LatencyRule:
    """The chunk latency budget applied, and the inference mode it assumed."""

    mode: Mode
    budget_s: float
    p95_s: float
    set_by: str  # how the budget was set, for the reason

    @property
    def passed(self) -> bool:
        return self.p95_s <= self.budget_s

    def reason(self, device: str) -> str:
        return (f"p95 chunk latency {self.p95_s * 1000:.1f} ms on {device} > budget {self.budget_s * 1000:.1f} ms "
                f"assuming {self.mode} inference ({self.set_by})")


def latency_rule(p95_s: float, fps: float, n_action_steps: int, budget_override_s: float = 0.0) -> LatencyRule:
    """Assume the mode `vla_infer` would pick by default for this latency; a lab-set budget overrides its budget."""
    mode = default_mode(p95_s, fps)
    if budget_override_s:
        return LatencyRule(mode, budget_override_s, p95_s, "latency_budget_ms set for the gate")
    budget = latency_budget_s(mode, fps, n_action_steps)
    if mode == "sync":
        how = f"one period at {fps:g} Hz"
    else:
        how = f"(n_action_steps {n_action_steps} - margin {ASYNC_MARGIN_STEPS}) // 2 periods at {fps:g} Hz"
    return LatencyRule(mode, budget, p95_s, how)
