"""`policy_evaluation` and `sim_evaluation` in Dagster: the open-loop gate (training health, errors, latency), then
the closed loop on simulated arms; only both together promote."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.defs.evaluation import policy_evaluation
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.training import CHECKS
from tatbot_pipeline.defs.sim import sim_evaluation
from tatbot_pipeline.digest import checkpoint_sha256
from tatbot_pipeline.evaluation.gate import AWAITING_SIM
from tatbot_pipeline.inference.delivery import deployed_name
from tatbot_pipeline.promotion import read_leaderboard, read_promoted

LOOSE = {"max_mae": 1e9, "max_joint_mae": 1e9, "latency_budget_ms": 1e9, "max_episodes": 1}


@pytest.fixture(scope="module")
def home(tmp_path_factory, pristine_recording: Path) -> tuple[Path, Path]:
    from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

    home = tmp_path_factory.mktemp("home")
    ckpt = save_tiny_smolvla_checkpoint(home / "outputs/train/r1/checkpoints/last/pretrained_model", pristine_recording)
    shutil.copytree(pristine_recording, home / "splits" / "v1" / "val")
    (home / "splits" / "latest").symlink_to("v1")
    return home, ckpt


def _report_training(instance, ckpt: Path, failed: set[str] = frozenset()) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization("trained_policy", metadata={
        "checkpoint": dg.MetadataValue.path(str(ckpt)), "split_version": "v1", "preset": "tiny_smolvla"}))
    for name in CHECKS:
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("trained_policy"), check_name=name, passed=name not in failed))


def _evaluate(instance, home: Path, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [policy_evaluation], instance=instance, raise_on_error=False,
        resources={"pipeline": PipelineResource(home=str(home), recordings_dir=str(home / "none"))},
        run_config={"ops": {"policy_evaluation": {"config": config}}},
    )


def test_healthy_checkpoint_within_thresholds_passes_the_open_loop_gate(home):
    home, ckpt = home
    with dg.instance_for_test() as instance:
        _report_training(instance, ckpt)
        result = _evaluate(instance, home, LOOSE)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        meta = mat.materialization.metadata
        assert list(meta)[0] == "summary" and meta["summary"].value.startswith("OPEN-LOOP GATE PASSED: health 3/3, MAE ")
        assert meta["open_loop_passed"].value is True and meta["val_frames"].value == 8
        assert meta["checkpoint_sha256"].value == checkpoint_sha256(ckpt)
        # every criterion against its limit in one table, the numbers to trend, and the latency mode it assumed;
        # the check carries each criterion as numbers
        assert f"| MAE | {meta['mae_rad'].value:.4g} rad | ≤ {LOOSE['max_mae']:.4g} rad | pass |" in \
            meta["gate"].value
        assert meta["chunk_p95_ms"].value > 0 and meta["inference_mode"].value in ("sync", "async")
        [check] = result.get_asset_check_evaluations()
        assert check.metadata["gate_mae_limit_rad"].value == LOOSE["max_mae"] and check.metadata["gate_mae_passed"].value
        assert meta["worst_joint"].value.endswith(".pos") and "gripper" not in meta["worst_joint"].value
        for key, value in meta.items():  # floats are read by people: 4 significant figures at most
            if isinstance(value.value, float):
                assert float(f"{value.value:.4g}") == value.value, (key, value.value)
        assert "| left.joint_0.pos |" in meta["per_joint_error"].value
        assert "| left.gripper.pos | n/a (not predicted) |" in meta["per_joint_error"].value
        assert meta["plots"].value.count("data:image/png;base64,") == 2  # error summary + one episode (max_episodes=1)
        assert "| 1 |" in meta["leaderboard"].value and "| pass |" in meta["leaderboard"].value
        # The open-loop page never guesses the promotion (sim_evaluation decides it, later): no stale "no" here.
        assert meta["promotion"].value == "decided by sim_evaluation" and "promotion: decided by sim_evaluation" in \
            meta["leaderboard"].value and "PROMOTED" not in meta["leaderboard"].value
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "promotion_gate" and check.passed
        assert check.description.startswith("OPEN-LOOP GATE PASSED: ") and f"≤ {LOOSE['max_mae']:.4g} rad" in check.description
    # Not promoted yet: promotion waits for the checkpoint's closed loop in simulation.
    assert read_promoted(PipelineSettings(home=home)) is None
    [entry] = read_leaderboard(PipelineSettings(home=home))
    assert entry["open_loop_passed"] and not entry["promoted"] and entry["reasons"] == [AWAITING_SIM]


def test_failed_health_or_threshold_blocks_promotion(home, tmp_path: Path):
    home, ckpt = home
    fresh_home = tmp_path / "home"
    shutil.copytree(home, fresh_home, symlinks=True)
    (fresh_home / "promoted.json").unlink(missing_ok=True)
    with dg.instance_for_test() as instance:
        _report_training(instance, ckpt, failed={"grad_norm_stable"})
        sick = _evaluate(instance, fresh_home, LOOSE)
        [check] = sick.get_asset_check_evaluations()
        assert not check.passed and "grad_norm_stable failed" in check.description
        assert check.severity == dg.AssetCheckSeverity.WARN

        _report_training(instance, ckpt)
        too_strict = _evaluate(instance, fresh_home, {**LOOSE, "max_mae": 0.0})
        [check] = too_strict.get_asset_check_evaluations()
        assert not check.passed and check.description.startswith("OPEN-LOOP GATE FAILED: ") and "> 0 rad" in check.description
    assert read_promoted(PipelineSettings(home=fresh_home)) is None


def test_without_a_trained_policy_the_run_fails_clearly(tmp_path: Path):
    with dg.instance_for_test() as instance:
        result = _evaluate(instance, tmp_path, LOOSE)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert "materialize trained_policy first" in failure.step_failure_data.error.message


# The demo's tiny model draws tens of mm off the path: relaxed limits pass it, the defaults (3 mm) do not.
RELAXED_SIM = {"episodes": 2, "tip_deviation_mm": 500.0, "max_tip_error_p95_mm": 500.0, "max_contact_force_n": 1000.0}


def _simulate(instance, home: Path, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [sim_evaluation], instance=instance, raise_on_error=False,
        resources={"pipeline": PipelineResource(home=str(home), recordings_dir=str(home / "none"))},
        run_config={"ops": {"sim_evaluation": {"config": config}}},
    )


def test_only_both_gates_promote_and_promotion_carries_the_sim_figures(home, tmp_path: Path):
    home, ckpt = home
    fresh_home = tmp_path / "home"
    shutil.copytree(home, fresh_home, symlinks=True)
    for stale in ("promoted.json", "outputs/eval/leaderboard.json"):
        (fresh_home / stale).unlink(missing_ok=True)
    with dg.instance_for_test() as instance:
        _report_training(instance, ckpt)
        assert _evaluate(instance, fresh_home, LOOSE).success

        strict = _simulate(instance, fresh_home, {"episodes": 2})  # the lab's default sim gate: 3 mm
        assert strict.success
        [check] = strict.get_asset_check_evaluations()
        assert check.check_name == "sim_gate" and not check.passed
        assert check.description.startswith("NOT PROMOTED: sim: ") and " — SIM GATE FAILED: " in check.description
        assert read_promoted(PipelineSettings(home=fresh_home)) is None
        [entry] = read_leaderboard(PipelineSettings(home=fresh_home))
        assert not entry["promoted"] and any(r.startswith("sim: ") and "mm" in r for r in entry["reasons"])

        relaxed = _simulate(instance, fresh_home, RELAXED_SIM)
        [mat] = relaxed.get_asset_materialization_events()
        meta = mat.materialization.metadata
        [check] = relaxed.get_asset_check_evaluations()
        assert instance.get_run_by_id(relaxed.run_id).tags["tatbot/promotion"] == "PROMOTED"
        assert instance.get_run_by_id(strict.run_id).tags["tatbot/promotion"] == "NOT PROMOTED"
    assert check.passed and meta["promoted"].value is True
    assert meta["summary"].value.startswith(f"PROMOTED {deployed_name(ckpt)} — SIM GATE PASSED: ")
    assert meta["strokes"].value == 2 and meta["tip_error_p95_mm"].value > 0
    assert meta["checkpoint_sha256"].value == checkpoint_sha256(ckpt)
    assert meta["drawn_vs_planned"].value.count("data:image/png;base64,") == 2  # one top-down plot per stroke
    assert meta["strokes_table"].value.startswith("- stroke 0: ok — tip deviation from the expert's replay p95 ")
    assert meta["noise_floor_mm"].value > 0 and meta["plant"].value.endswith("/plant/scene.xml")  # not calibrated
    promoted = read_promoted(PipelineSettings(home=fresh_home))
    assert promoted["checkpoint"] == str(ckpt) and promoted["checkpoint_sha256"] == checkpoint_sha256(ckpt)
    assert promoted["sim"]["passed"] and promoted["sim"]["strokes"] == 2 and promoted["sim"]["tip_error_mm_p95"] > 0
    assert "| pass " in meta["leaderboard"].value and "| PROMOTED |" in meta["leaderboard"].value
