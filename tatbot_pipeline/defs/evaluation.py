"""`policy_evaluation`: open-loop replay of the val split through the latest checkpoint, and the promotion gate."""

import dagster as dg
import numpy as np

from pydantic import Field

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import evaluate_condition
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.training import CHECKS as HEALTH_CHECKS
from tatbot_pipeline.defs.training import LOOP_ENTRIES
from tatbot_pipeline.evaluation.gate import (
    Thresholds,
    decide,
    leaderboard_markdown,
    record,
)
from tatbot_pipeline.evaluation.offline import OfflineEval, evaluate_checkpoint
from tatbot_pipeline.plots import error_summary, png_markdown, trajectories
from tatbot_pipeline.robot.spec import JOINT_NAMES

TRAINED = dg.AssetKey("trained_policy")


class EvaluationConfig(dg.Config):
    """Launchpad config of `policy_evaluation`: evaluation device and the promotion thresholds."""

    device: str = "cpu"
    max_episodes: int = 0  # 0: every val episode
    # Empty: the lab's gate from the environment (TATBOT_GATE_*; automated evaluations have no launchpad), else the
    # defaults of evaluation/gate.py: Thresholds.
    max_mae: float | None = Field(None, description="promote only below this mean action error (rad)")
    max_joint_mae: float | None = Field(None, description="... and below this error on the worst joint (rad)")
    latency_budget_ms: float | None = Field(None, description="chunk latency budget (ms); empty: the budget of the "
                                            "inference mode the measured chunk latency calls for")

    def thresholds(self, settings: PipelineSettings) -> Thresholds:
        lab = settings.gate
        return Thresholds(
            max_mae=self.max_mae if self.max_mae is not None else lab.max_mae,
            max_joint_mae=self.max_joint_mae if self.max_joint_mae is not None else lab.max_joint_mae,
            latency_budget_s=(self.latency_budget_ms / 1000 if self.latency_budget_ms is not None
                              else lab.latency_budget_s),
        )



def latest_checkpoint(instance: dg.DagsterInstance) -> tuple[str, str, dict]:
    """Checkpoint path, run id and lineage metadata of the newest `trained_policy` materialization."""
    event = instance.get_latest_materialization_event(TRAINED)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("no trained_policy materialization yet — materialize trained_policy first")
    meta = event.asset_materialization.metadata
    if "checkpoint" not in meta:
        raise dg.Failure(f"trained_policy materialization of run {event.run_id} has no checkpoint path")
    lineage = {k: meta[k].value for k in ("split_version", "preset", "steps") if k in meta}
    return str(meta["checkpoint"].value), event.run_id, lineage


def new_since_previous_checkpoint(instance: dg.DagsterInstance, train_run: str) -> dict:
    """The evaluated checkpoint's "new since the previous checkpoint" entries (trained_policy), shown here too."""
    event = instance.get_latest_materialization_event(TRAINED)
    if event is None or event.run_id != train_run or event.asset_materialization is None:
        return {}  # a newer checkpoint landed meanwhile: its entries are not this one's
    meta = event.asset_materialization.metadata
    return {key: meta[key] for key in LOOP_ENTRIES if key in meta}


def training_health(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, str]:
    """Whether every health check of trained_policy passed in the run that produced the checkpoint."""
    keys = [dg.AssetCheckKey(TRAINED, name) for name in HEALTH_CHECKS]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    problems = []
    for key in keys:
        rec = records.get(key)
        if rec is None or rec.run_id != run_id:
            problems.append(f"{key.name} not evaluated for this checkpoint")
        elif rec.status.value != "SUCCEEDED":  # FAILED: the check ran and did not pass
            problems.append(f"{key.name} {rec.status.value.lower()}")
    return not problems, ", ".join(problems)


@dg.asset(
    deps=[dg.AssetDep(TRAINED)],
    group_name="evaluation",
    kinds={"lerobot", "pytorch"},
    owners=OWNERS,
    automation_condition=evaluate_condition(),
    description="How well the latest checkpoint predicts held-out strokes (splits/latest/val), joint by joint, and "
    "how fast it answers; decides promotion to the robot (promoted.json under the pipeline home).",
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset="policy_evaluation",
                                   description="Passes when the checkpoint was promoted: errors and latency within "
                                   "thresholds and the training health checks passed.")],
)
def policy_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings
    checkpoint, train_run, lineage = latest_checkpoint(context.instance)
    healthy, health_note = training_health(context.instance, train_run)
    val_root = (settings.splits_dir / "latest" / "val").resolve()
    context.log.info(f"evaluating {checkpoint} on {val_root} ({config.device})")
    result = evaluate_checkpoint(checkpoint, val_root, config.device, config.max_episodes or None, context.log.info)
    thresholds = config.thresholds(settings)
    decision = decide(result, thresholds, healthy, health_note)
    board = record(settings.home, result, decision, thresholds, {**lineage, "train_run": train_run})
    context.log.info(("PROMOTED " if decision.promoted else "not promoted: " + "; ".join(decision.reasons)) + checkpoint)
    return dg.MaterializeResult(
        metadata={**evaluation_metadata(result, decision.promoted, decision.reasons, board),
                  **new_since_previous_checkpoint(context.instance, train_run)},
        check_results=[dg.AssetCheckResult(
            check_name="promotion_gate", passed=decision.promoted, severity=dg.AssetCheckSeverity.WARN,
            description="promoted" if decision.promoted else "; ".join(decision.reasons),
        )],
    )


def evaluation_metadata(result: OfflineEval, promoted: bool, reasons: list[str], board: list[dict]) -> dict:
    e, lat = result.errors, result.latency
    joints = ["| joint | MAE (rad) | MSE |", "|---|---|---|"] + [
        f"| {j} | {e.mae_per_joint[j]:.4f} | {e.mse_per_joint[j]:.5f} |" for j in JOINT_NAMES
    ]
    abs_err = np.abs(np.concatenate([t.predicted - t.recorded for t in result.traces]))
    plots = [png_markdown(error_summary(abs_err, e.mae_per_chunk_step), "errors")]
    plots += [png_markdown(trajectories(t.recorded, t.predicted, f"val episode {t.episode}: recorded vs predicted"),
                           f"episode {t.episode}") for t in result.traces[:2]]
    return {
        "checkpoint": dg.MetadataValue.path(result.checkpoint),
        "promoted": promoted,
        "gate": dg.MetadataValue.md("promoted" if promoted else "\n".join(f"- {r}" for r in reasons)),
        "policy_type": result.policy_type,
        "device": result.device,
        "val_episodes": result.episodes,
        "val_frames": result.frames,
        "mae_rad": dg.MetadataValue.float(e.mae),
        "mse": dg.MetadataValue.float(e.mse),
        "mae_left_arm": dg.MetadataValue.float(e.mae_per_arm["left"]),
        "mae_right_arm": dg.MetadataValue.float(e.mae_per_arm["right"]),
        "latency_mean_ms": dg.MetadataValue.float(lat.mean_s * 1000),
        "latency_p95_ms": dg.MetadataValue.float(lat.p95_s * 1000),
        "latency_max_ms": dg.MetadataValue.float(lat.max_s * 1000),
        "per_joint_error": dg.MetadataValue.md("\n".join(joints)),
        "plots": dg.MetadataValue.md("\n\n".join(plots)),
        "leaderboard": dg.MetadataValue.md(leaderboard_markdown(board)),
    }


defs = dg.Definitions(assets=[policy_evaluation])
