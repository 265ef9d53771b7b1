"""`sim_calibration`: the simulated arms fitted to the newest split's recordings (evaluation/calibration.py).

Its fitted scene is what `sim_evaluation` runs the split's checkpoints on (`PipelineSettings.calibrated_scene`); a
split without one is simulated on trossen-arm-sim's own servo gains, and sim_evaluation's metadata says which.
Materialize it after a new split (UI, or the `calibrate_sim` job); `tatbot-pipeline sim-calibrate` does the same
from a shell.
"""

import base64
from pathlib import Path

import dagster as dg
from pydantic import Field

from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.metadata import headline_first, number
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.evaluation.calibration import Calibration, CalibrationRefused, calibrate, is_hardware_rollout

SPLITS = dg.AssetKey("training_splits")


class SimCalibrationConfig(dg.Config):
    confirm: bool = Field(True, description="replay the val strokes once through the real-time controllers and the "
                          "driver with the fitted scene (about a minute)")


def newest_split(instance: dg.DagsterInstance) -> tuple[str, Path]:
    event = instance.get_latest_materialization_event(SPLITS)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("no training_splits yet — the plant is fitted on a split's train strokes")
    meta = event.asset_materialization.metadata
    return str(meta["version"].value), Path(str(meta["path"].value))


@dg.asset(
    deps=[dg.AssetDep(SPLITS)],
    group_name="evaluation",
    kinds={"mujoco"},
    owners=OWNERS,
    description="The simulated arms' servo gains, damping and command delay fitted to the newest split's train "
    "strokes and to every hardware rollout robot_eval recorded (their actions replayed on the arm model, faster "
    "than real time), the control gap on the split's val "
    "strokes before and after (rad per joint, mm at the needle tip), confirmed once through the real-time "
    "controllers and driver. sim_evaluation runs on the fitted scene.",
)
def sim_calibration(context: dg.AssetExecutionContext, config: SimCalibrationConfig,
                    pipeline: PipelineResource) -> dg.MaterializeResult:
    version, root = newest_split(context.instance)
    out_dir = pipeline.settings.calibration_dir(version)
    context.log.info(f"calibrating the simulated arms on split {version} ({root}) -> {out_dir}")
    settings = pipeline.settings
    rollouts = sorted(d for d in settings.eval_datasets_dir.glob("vla-eval-*") if is_hardware_rollout(d)) \
        if settings.eval_datasets_dir.is_dir() else []
    if rollouts:
        context.log.info(f"fitting on {len(rollouts)} hardware rollout(s) too: {', '.join(d.name for d in rollouts)}")
    try:
        result = calibrate(root, out_dir, confirm=config.confirm, progress=context.log.info, rollouts=rollouts)
    except CalibrationRefused as e:
        raise dg.Failure(str(e)) from None
    return dg.MaterializeResult(metadata=calibration_metadata(result, version),
                                data_version=dg.DataVersion(f"{version}-{result.params.delay_s:g}"))


def calibration_metadata(result: Calibration, version: str) -> dict:
    entries = {
        "split_version": version,
        "gap_before_mm": number(result.gap_before.tip_p95_mm),
        "gap_after_mm": number(result.gap_after.tip_p95_mm),
        "gap_confirmed_mm": number(result.confirmed.tip_p95_mm if result.confirmed else None),
        "delay_ms": number(result.params.delay_s * 1000),
        "train_strokes": number(result.train_strokes),
        "hardware_rollouts": number(len(result.rollouts)),
        "val_strokes": number(result.val_strokes),
        "fit_s": number(result.fit_s),
        "scene": dg.MetadataValue.path(result.scene),
    }
    rows = ["| joint | kp | kv | gap before (rad) | gap after (rad) |", "|---|---|---|---|---|"]
    for j, (kp, kv) in enumerate(zip(result.params.kp, result.params.kv)):
        rows.append(f"| joint_{j} | {kp:.4g} | {kv:.4g} | {result.gap_before.joint_p95_rad[j]:.4f} | "
                    f"{result.gap_after.joint_p95_rad[j]:.4f} |")
    last = {"joints": dg.MetadataValue.md("\n".join(rows))}
    if result.plot and Path(result.plot).is_file():
        data = base64.b64encode(Path(result.plot).read_bytes()).decode()
        last["gap_plot"] = dg.MetadataValue.md(f"![control gap](data:image/png;base64,{data})")
    return headline_first(result.headline(), entries, last)


calibrate_job = dg.define_asset_job(
    "calibrate_sim", selection=[sim_calibration],
    description="Fit the simulated arms to the newest split's recordings (sim_evaluation then runs on them).")

defs = dg.Definitions(assets=[sim_calibration], jobs=[calibrate_job])
