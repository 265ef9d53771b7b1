"""The sim gate: what a checkpoint's closed-loop rollouts in simulation must show before it may be promoted.

Four criteria, each shown measured vs limit like the open-loop gate (evaluation/gate.py `Criterion`):
- the share of strokes whose needle tip stayed within `tip_deviation_mm` of the recorded path (per stroke: the p95
  over its steps, worst arm);
- the p95 tip deviation over every step of every stroke, both arms;
- no contact above `max_contact_force_n` outside the needle (any arm body other than `needle_bodies` touching
  anything, the arm's own base on its mount excepted);
- no stroke stopped by a monitor (tracking, envelope, collision, a controller that stopped answering), the park
  after the last stroke included: a park that fails is that stroke's stop, with its reason.
Contacts count in every phase: the approach to a stroke's start, the stroke, the park.
The reasons name the stroke (the val split's episode) and, for contacts, the bodies.

The tip deviations are measured from the expert's replay in the same simulation (evaluation/sim.py), and a contact
or stop that replay also has is the model's, not counted. A gate is only as fine as its noise: when the evaluation
measured its noise floor (the expert replayed twice), a tip limit below `NOISE_MARGIN` times it is **refused** — the
decision says so and does not pass — rather than applied to differences the simulator makes by itself.

The defaults were set by measurement (bench/bench_sim_gate.py; tests/evaluation/test_sim_gate_resolution.py on the
real controllers): on the demo's split and on synthetic recordings, the expert's replay passes with margin, the
expert biased by 0.015 rad or more on shoulder and elbow fails, the expert one step late fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tatbot_pipeline.config import SIM_GATE_FIELDS, PipelineSettings
from tatbot_pipeline.evaluation.gate import Criterion

# The bodies that carry the needle; their touching skin is the job.
# The simulated tool's needle (robot/plant.py) and, in scenes without the tool, the gripper carriages.
NEEDLE_BODIES = ("needle", "carriage_left", "carriage_right")
# A tip limit must be at least this many times the evaluation's noise floor to be applied.
NOISE_MARGIN = 1.5
# The arm's root stands on its mount (the scene's floor): always in contact, never a collision.
MOUNT_BODIES = ("base_link",)


@dataclass(frozen=True)
class SimGateLimits:
    """Limits of the sim gate (settings TATBOT_SIM_GATE_<FIELD>, wired by the config layer)."""

    # From the expert's replay (sim.py). Measured (bench/bench_sim_gate.py, 4 strokes): the expert 0.8–0.9 mm over all
    # steps, 1.1–1.9 mm on its worst stroke, noise floor 0.5–0.9 mm; + 0.015 rad on shoulder and elbow 3.9 mm; + 0.02
    # rad 5.5–6.1 mm; one step late 13 mm.
    tip_deviation_mm: float = 4.0  # a stroke is "within" when its tip deviation p95 (worst arm) is at most this
    min_share_within: float = 0.8  # of the strokes evaluated
    max_tip_error_p95_mm: float = 3.0  # over all steps, both arms
    max_contact_force_n: float = 2.0  # peak normal force of any contact outside the needle
    max_stops: int = 0  # strokes a monitor stopped
    needle_bodies: tuple[str, ...] = NEEDLE_BODIES

    @classmethod
    def for_lab(cls, settings: PipelineSettings, **chosen: float | None) -> "SimGateLimits":
        """The lab's sim gate (TATBOT_SIM_GATE_* over these defaults), with what a launchpad chose on top."""
        values = {**settings.sim_gate_overrides, **{k: v for k, v in chosen.items() if v is not None}}
        if "max_stops" in values:
            values["max_stops"] = int(values["max_stops"])
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("tip_deviation_mm", "max_tip_error_p95_mm", "max_contact_force_n"):
            if not getattr(self, name) > 0:
                raise ValueError(f"sim gate limit {name}={getattr(self, name)!r} must be > 0")
        if not 0 <= self.min_share_within <= 1:
            raise ValueError(f"sim gate limit min_share_within={self.min_share_within!r} must be in [0, 1]")
        if self.max_stops < 0:
            raise ValueError(f"sim gate limit max_stops={self.max_stops!r} must be >= 0")


class StrokeOutcome(Protocol):
    """What the gate reads of one stroke (evaluation/sim.py `StrokeResult`)."""

    episode: int
    stop_reason: str | None
    expert_stop_reason: str | None  # the expert's replay stopped too: the model's stop, not counted
    park_failure: str | None
    tip_error_p95_mm: float
    contacts: list[dict]


@dataclass(frozen=True)
class SimGateDecision:
    passed: bool
    reasons: list[str]
    criteria: tuple[Criterion, ...]
    noise_floor_mm: float | None = None  # the expert's replay run twice: p95 tip distance over their steps
    refused: str | None = None  # why the gate would not judge (a limit inside its own noise)

    def headline(self) -> str:
        verdict = "SIM GATE REFUSED" if self.refused else "SIM GATE PASSED" if self.passed else "SIM GATE FAILED"
        floor = f"; noise floor {self.noise_floor_mm:.2f} mm" if self.noise_floor_mm is not None else ""
        return f"{verdict}: " + ", ".join(c.describe() for c in self.criteria) + floor


def outside_needle(contact: dict, limits: SimGateLimits) -> bool:
    """Whether a contact is the arm touching something with anything but the needle (or standing on its mount)."""
    return contact["body1"] not in limits.needle_bodies and contact["body1"] not in MOUNT_BODIES


def refusal(limits: SimGateLimits, noise_floor_mm: float | None) -> str | None:
    """Why a gate with these tip limits cannot judge at this noise floor (None: it can)."""
    if noise_floor_mm is None:
        return None
    tight = min(limits.tip_deviation_mm, limits.max_tip_error_p95_mm)
    if tight >= NOISE_MARGIN * noise_floor_mm:
        return None
    return (f"refused: the tip limit {tight:g} mm is below {NOISE_MARGIN:g}× this evaluation's noise floor "
            f"({noise_floor_mm:.2f} mm: the expert's recorded actions replayed twice in the same simulation differ by "
            "that much) — the gate cannot tell a policy from the simulator's own noise at that resolution; raise "
            "TATBOT_SIM_GATE_TIP_DEVIATION_MM / _MAX_TIP_ERROR_P95_MM, or run on a less loaded machine")


def decide_sim(strokes: list[StrokeOutcome], tip_error_p95_mm: float, limits: SimGateLimits,
               noise_floor_mm: float | None = None) -> SimGateDecision:
    """Every criterion measured, every reason collected (not stopped at the first); refused, whatever was measured,
    when a tip limit sits inside the measured noise floor."""
    reasons: list[str] = []
    if not strokes:
        reasons.append("no stroke was evaluated in simulation")
    within = [s for s in strokes if s.tip_error_p95_mm <= limits.tip_deviation_mm]
    share = len(within) / len(strokes) if strokes else 0.0
    if strokes and share < limits.min_share_within:
        outside = ", ".join(f"stroke {s.episode} ({s.tip_error_p95_mm:.2f} mm)" for s in strokes if s not in within)
        reasons.append(f"{share:.0%} of strokes kept the needle within {limits.tip_deviation_mm:g} mm of the recorded "
                       f"path (p95), < {limits.min_share_within:.0%}: {outside}")
    if tip_error_p95_mm > limits.max_tip_error_p95_mm:
        reasons.append(f"needle-tip deviation p95 {tip_error_p95_mm:.2f} mm > {limits.max_tip_error_p95_mm:g} mm")
    hits = [(s, c) for s in strokes for c in s.contacts
            if outside_needle(c, limits) and c["peak_force_n"] > limits.max_contact_force_n]
    for s, c in hits:
        reasons.append(f"stroke {s.episode}: {c['side']} arm's {c['body1']} touched {c['body2']} ({c['geom2']}) with "
                       f"{c['peak_force_n']:.1f} N > {limits.max_contact_force_n:g} N")
    peak = max((c["peak_force_n"] for s in strokes for c in s.contacts if outside_needle(c, limits)), default=0.0)
    stopped = [s for s in strokes if (s.stop_reason and not s.expert_stop_reason) or s.park_failure]
    if len(stopped) > limits.max_stops:
        reasons.extend(f"stroke {s.episode} stopped: {s.stop_reason}" for s in stopped
                       if s.stop_reason and not s.expert_stop_reason)
        reasons.extend(f"the arms did not park after stroke {s.episode}: {s.park_failure}" for s in stopped
                       if s.park_failure)
    worst_contact = f"{hits[0][1]['body1']} on {hits[0][1]['body2']}, stroke {hits[0][0].episode}" if hits else ""
    criteria = (
        # As a share outside, so that it reads like every other criterion: measured ≤ limit.
        Criterion("strokes off the path", (1 - share) * 100, (1 - limits.min_share_within) * 100, "%",
                  bool(strokes) and share >= limits.min_share_within,
                  f"{len(strokes) - len(within)}/{len(strokes)} with tip deviation p95 > {limits.tip_deviation_mm:g} mm"),
        Criterion("tip deviation p95", tip_error_p95_mm, limits.max_tip_error_p95_mm, "mm",
                  tip_error_p95_mm <= limits.max_tip_error_p95_mm),
        Criterion("peak contact force outside the needle", peak, limits.max_contact_force_n, "N", not hits, worst_contact),
        Criterion("strokes stopped", float(len(stopped)), float(limits.max_stops), "",
                  len(stopped) <= limits.max_stops,
                  ", ".join(f"stroke {s.episode}{' (not parked)' if s.park_failure else ''}" for s in stopped)),
    )
    refused = refusal(limits, noise_floor_mm)
    if refused:
        reasons.insert(0, refused)
    return SimGateDecision(passed=not reasons, reasons=reasons, criteria=criteria, noise_floor_mm=noise_floor_mm,
                           refused=refused)
