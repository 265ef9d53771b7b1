"""The sim gate calibrated before it is trusted: with its default limits, on the real simulated controllers and the
`trossen_arm` driver, the expert's own recorded actions pass, the expert biased by 0.02 rad on shoulder and elbow
(about 5 mm at the tip) fails, the expert one step late fails, and a limit inside the measured noise floor is
refused rather than applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tatbot_pipeline.evaluation.sim import ExpertVariant, evaluate_expert_in_sim
from tatbot_pipeline.evaluation.sim_gate import NOISE_MARGIN, SimGateLimits, decide_sim
from tatbot_pipeline.robot.plant import PlantParams, write_scene
from tatbot_pipeline.robot.sim_controllers import sim_controllers

STROKES = 2
DEFAULT = SimGateLimits()


@pytest.fixture(scope="module")
def judged(pristine_recording_nocams: Path, tmp_path_factory) -> dict[str, object]:
    """The three variants, one pair of controllers for all (as a lab's evaluation would run them one after another)."""
    root = tmp_path_factory.mktemp("resolution")
    variants = {"expert": ExpertVariant(), "biased": ExpertVariant(bias_rad=0.02),
                "late": ExpertVariant(delay_steps=1)}
    plant = write_scene(root / "plant", PlantParams.packaged())  # what sim_evaluation runs on without a calibration
    with sim_controllers(root / "controllers", scenes={"left": plant, "right": plant}, log_setpoints=True) as controllers:
        return {name: evaluate_expert_in_sim(pristine_recording_nocams, root / name, variant, episodes=STROKES,
                                             controllers=controllers, progress=lambda m: None)
                for name, variant in variants.items()}


def test_the_expert_replay_passes_the_default_gate_with_margin(judged):
    result = judged["expert"]
    assert result.passed, result.reasons
    assert result.strokes == STROKES and all(r.reference == "expert's replay" for r in result.records)
    # Margin: the expert's deviation from its own first replay is under two thirds of the p95 limit over all steps,
    # and under 80 % of the per-stroke limit on its worst stroke.
    assert result.tip_error_mm_p95 < DEFAULT.max_tip_error_p95_mm * 2 / 3, result.decision.headline()
    assert max(r.tip_error_p95_mm for r in result.records) < DEFAULT.tip_deviation_mm * 0.8
    # The noise floor was measured and sits below the limits by the margin the gate insists on.
    assert result.noise_floor_mm is not None
    assert min(DEFAULT.tip_deviation_mm, DEFAULT.max_tip_error_p95_mm) >= NOISE_MARGIN * result.noise_floor_mm


# A known-bad input fails on its tip criteria, whatever the noise floor of its own run (on a loaded machine the gate may
# also refuse to judge; either way it does not pass).
def test_a_bias_of_two_hundredths_of_a_radian_fails(judged):
    result = judged["biased"]
    assert not result.passed
    failed = {c.name for c in result.decision.criteria if not c.passed}
    assert {"strokes off the path", "tip deviation p95"} <= failed, result.decision.headline()
    assert result.tip_error_mm_p95 > DEFAULT.max_tip_error_p95_mm


def test_the_expert_one_step_late_fails(judged):
    result = judged["late"]
    assert not result.passed
    failed = {c.name for c in result.decision.criteria if not c.passed}
    assert {"strokes off the path", "tip deviation p95"} <= failed, result.decision.headline()


def test_a_limit_inside_the_noise_floor_is_refused_not_applied(judged):
    """The expert's evaluation, decided again with limits inside its measured floor: refused, not failed or passed."""
    expert = judged["expert"]
    tight = SimGateLimits(tip_deviation_mm=expert.noise_floor_mm, max_tip_error_p95_mm=expert.noise_floor_mm)
    decision = decide_sim(expert.records, expert.tip_error_mm_p95, tight, expert.noise_floor_mm)
    assert decision.refused and not decision.passed
    assert decision.reasons[0].startswith(f"refused: the tip limit {expert.noise_floor_mm:g} mm is below 1.5× this "
                                          f"evaluation's noise floor ({expert.noise_floor_mm:.2f} mm")
    assert decision.headline().startswith("SIM GATE REFUSED")
