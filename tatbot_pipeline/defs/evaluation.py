"""`policy_evaluation`: open-loop replay of the val split through the latest checkpoint, and the promotion gate."""

from pathlib import Path

import dagster as dg
import numpy as np

from pydantic import Field

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.digest import checkpoint_sha256
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import evaluate_condition
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.datasets.build import resolve_latest
from tatbot_pipeline.defs.metadata import GATE_NAME_HELP, gate_table, headline_first, named_gate, number, sig
from tatbot_pipeline.evaluation.gate import GateDecision, Thresholds, decide, record
from tatbot_pipeline.evaluation.action_errors import ActionErrors
from tatbot_pipeline.evaluation.offline import OfflineEval, evaluate_checkpoint
from tatbot_pipeline.promotion import DECIDED_BY_SIM, open_loop_board_markdown
from tatbot_pipeline.training.health import HEALTH_CHECKS, health_of_run
from tatbot_pipeline.training.lineage import LOOP_ENTRIES
from tatbot_pipeline.plots import error_summary, png_markdown, trajectories
from tatbot_pipeline.robot.spec import JOINT_NAMES

TRAINED = dg.AssetKey("trained_policy")


class EvaluationConfig(dg.Config):
    """Launchpad config of policy_evaluation: evaluation device and the promotion thresholds."""

    device: str = "cpu"
    max_episodes: int = 0  # 0: every val episode
    # Empty: the lab's gate from the environment (TATBOT_GATE_*; automated evaluations have no launchpad), else the
    # defaults of evaluation/gate.py: Thresholds.
    max_mae: float | None = Field(None, description="promote only below this mean action error (rad)")
    max_joint_mae: float | None = Field(None, description="... and below this error on the worst joint (rad)")
    latency_budget_ms: float | None = Field(None, description="chunk latency budget (ms); empty: the budget of the "
                                            "inference mode the measured chunk latency calls for")
    gate_name: str = Field("", description=GATE_NAME_HELP)

    def thresholds(self, settings: PipelineSettings) -> Thresholds:
        budget_s = self.latency_budget_ms / 1000 if self.latency_budget_ms is not None else None
        return Thresholds.for_lab(settings, max_mae=self.max_mae, max_joint_mae=self.max_joint_mae,
                                  latency_budget_s=budget_s)



def latest_checkpoint(instance: dg.DagsterInstance) -> tuple[str, str, dict]:
    """Checkpoint path, run id and lineage metadata of the newest `trained_policy` materialization."""
    event = instance.get_latest_materialization_event(TRAINED)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("no trained_policy materialization yet — materialize trained_policy first")
    meta = event.asset_materialization.metadata
    if "checkpoint" not in meta:
        raise dg.Failure(f"trained_policy materialization of run {event.run_id} has no checkpoint path")
    lineage = {k: meta[k].value for k in ("split_version", "preset", "steps", "checkpoint_sha256") if k in meta}
    return str(meta["checkpoint"].value), event.run_id, lineage


def loop_entries_of(instance: dg.DagsterInstance, train_run: str) -> dict:
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
    latest = {key.name: (rec.run_id, rec.status.value.lower()) for key in keys if (rec := records.get(key))}
    return health_of_run(latest, run_id)


@dg.asset(
    deps=[dg.AssetDep(TRAINED)],
    group_name="evaluation",
    kinds={"lerobot", "pytorch"},
    owners=OWNERS,
    automation_condition=evaluate_condition(),
    description="How well the newest checkpoint predicts held-out strokes (the `val` side of the split it was trained "
    "on), joint by joint, and how fast it computes an action chunk: the open-loop half of promotion. A checkpoint "
    "that passes it goes on to sim_evaluation (closed loop on the simulated arms), and only both together promote "
    "it (`promoted.json` under the pipeline home). Every criterion is shown measured against its limit.",
    check_specs=[dg.AssetCheckSpec("promotion_gate", asset="policy_evaluation",
                                   description="Passes when the open-loop gate passed: training health, mean and "
                                   "worst-joint action error and chunk latency within the gate's limits. Promotion "
                                   "also needs sim_evaluation's sim_gate.")],
)
def policy_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings
    checkpoint, train_run, lineage = latest_checkpoint(context.instance)
    healthy, health_note = training_health(context.instance, train_run)
    val_root = val_split(settings.splits_dir, lineage.get("split_version"))
    lineage["checkpoint_sha256"] = judged_digest(checkpoint, lineage.get("checkpoint_sha256"), context.log)
    context.log.info(f"evaluating {checkpoint} (sha256 {lineage['checkpoint_sha256'][:12]}…) on {val_root} "
                     f"({config.device})")
    result = evaluate_checkpoint(checkpoint, val_root, config.device, config.max_episodes or None, context.log.info)
    thresholds = config.thresholds(settings)
    count = f"{len(HEALTH_CHECKS)}/{len(HEALTH_CHECKS)}"
    decision = decide(result, thresholds, healthy, health_note, health_count=count)
    board = record(settings, result, decision, thresholds, {**lineage, "train_run": train_run})
    headline = named_gate(decision.headline(), config.gate_name)
    context.log.info(headline)
    # Limits set for this run are shown beside the lab's, judged on the same measurements.
    lab = decide(result, Thresholds.for_lab(settings), healthy, health_note, health_count=count) \
        if config.gate_name else None
    names = (config.gate_name, "the lab's gate (defaults)" if Thresholds.for_lab(settings) == Thresholds()
             else "the lab's gate (TATBOT_GATE_*)")
    return dg.MaterializeResult(
        metadata=evaluation_metadata(result, decision, board, loop_entries_of(context.instance, train_run),
                                     lineage["checkpoint_sha256"], headline, lab, names),
        check_results=[dg.AssetCheckResult(
            check_name="promotion_gate", passed=decision.passed, severity=dg.AssetCheckSeverity.WARN,
            description=headline, metadata=criteria_metadata(decision),
        )],
    )


def judged_digest(checkpoint: str, trained: str | None, log) -> str:
    """The digest of the files this evaluation judges; a checkpoint changed since training is judged as it is now,
    and the log says so (promotion then names these bytes, not the trained ones)."""
    digest = checkpoint_sha256(Path(checkpoint))
    if trained and not trained.startswith("none") and trained != digest:
        log.warning(f"{checkpoint} changed since trained_policy recorded it (sha256 {trained[:12]}… -> {digest[:12]}…): "
                    "evaluating the files as they are now")
    return digest


def val_split(splits_dir: Path, version: str | None) -> Path:
    """The val side of the split the checkpoint was trained on: a split rebuilt since must not change the exam."""
    if version and (splits_dir / version / "val").is_dir():
        return (splits_dir / version / "val").resolve()
    return resolve_latest(splits_dir) / "val"


def criteria_metadata(decision: GateDecision) -> dict:
    """Each criterion as numbers (measured, limit) and pass/fail, so the UI can trend them and a reader sees why."""
    out: dict = {}
    for c in decision.criteria:
        key = c.name.lower().replace(" ", "_")
        if c.measured is None:
            out[f"gate_{key}"] = dg.MetadataValue.text(("pass: " if c.passed else "FAIL: ") + c.detail)
            continue
        out[f"gate_{key}_{c.unit}"] = number(c.measured)
        out[f"gate_{key}_limit_{c.unit}"] = number(c.limit)
        out[f"gate_{key}_passed"] = c.passed
    if decision.latency is not None:
        out["gate_inference_mode"] = decision.latency.mode
    return out


def joint_table(errors: ActionErrors) -> str:
    rows = ["| joint | MAE | MSE |", "|---|---|---|"]
    for j in JOINT_NAMES:
        unit = "m" if "gripper" in j else "rad"
        if j in errors.not_predicted:
            rows.append(f"| {j} | n/a (not predicted) | n/a |")
        else:
            rows.append(f"| {j} | {sig(errors.mae_per_joint[j])} {unit} | {sig(errors.mse_per_joint[j])} {unit}² |")
    return "\n".join(rows)


def evaluation_metadata(result: OfflineEval, decision: GateDecision, board: list[dict], loop: dict,
                        sha256: str, headline: str, lab: GateDecision | None = None,
                        names: tuple[str, str] = ("", "")) -> dict:
    e, lat = result.errors, result.latency
    worst, worst_mae = e.worst_joint
    abs_err = np.abs(np.concatenate([t.predicted - t.recorded for t in result.traces]))
    plots = [png_markdown(error_summary(abs_err, e.mae_per_chunk_step), "errors")]
    plots += [png_markdown(trajectories(t.recorded, t.predicted, f"val episode {t.episode}: recorded vs predicted"),
                           f"episode {t.episode}") for t in result.traces[:2]]
    entries = {
        "open_loop_passed": decision.passed,
        "promotion": DECIDED_BY_SIM,  # never a guess that sim_evaluation would make stale
        **({"lab_gate_passed": lab.passed} if lab is not None else {}),
        "gate": gate_table(decision.criteria, lab.criteria if lab is not None else None, names),
        "mae_rad": number(e.mae),
        "worst_mae_rad": number(worst_mae),
        "inference_mode": decision.latency.mode if decision.latency is not None else "n/a",
        "mse_rad2": number(e.mse),
        "mae_left_arm_rad": number(e.mae_per_arm["left"]),
        "mae_right_arm_rad": number(e.mae_per_arm["right"]),
        "worst_joint": worst,
        "not_predicted": ", ".join(e.not_predicted) or "none",
        "chunk_mean_ms": number(lat.mean_s * 1000),
        "chunk_p95_ms": number(lat.p95_s * 1000),
        "chunk_max_ms": number(lat.max_s * 1000),
        "val_episodes": number(result.episodes),
        "val_frames": number(result.frames),
        "policy_type": result.policy_type,
        "device": result.device,
        "checkpoint": dg.MetadataValue.path(result.checkpoint),
        "checkpoint_sha256": sha256,
        "val_split": dg.MetadataValue.path(result.val_root),
        **loop,
    }
    last = {
        "per_joint_error": dg.MetadataValue.md(joint_table(e)),
        "plots": dg.MetadataValue.md("\n\n".join(plots)),
        "leaderboard": dg.MetadataValue.md(open_loop_board_markdown(board)),
    }
    return headline_first(headline, entries, last)


evaluate_job = dg.define_asset_job(
    "evaluate_policy", selection=[policy_evaluation],
    description="Evaluate the newest checkpoint on its val split and decide promotion (automation does it by itself).")

defs = dg.Definitions(assets=[policy_evaluation], jobs=[evaluate_job])
