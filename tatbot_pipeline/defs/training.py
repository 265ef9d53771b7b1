"""`trained_policy`: lerobot-train on the latest train split, its health checks, and nightly retraining on new data."""


import json
import os
from pathlib import Path

import dagster as dg

from tatbot_pipeline.datasets.build import split_changes
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import RETRAIN_CRON, retrain_condition
from tatbot_pipeline.defs.placement import gpu_run_tags, train_gpus
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.plots import loss_curve, png_markdown
from tatbot_pipeline.training.health import run_health
from tatbot_pipeline.training.lineage import (
    code_version,
    scene_snapshot,
    split_identity,
    split_manifest,
)
from tatbot_pipeline.training.presets import PRESETS, TrainOptions, command_line
from tatbot_pipeline.training.runner import TrainingRun, train_policy

# dagster.yaml limits runs with this tag to one at a time; the runner's file lock covers untagged launches.
TRAINING_TAG = "tatbot/training"
CHECKS = ("loss_decreased", "grad_norm_stable", "batch_sane")
# Run tags of every training launch: the queue limit, and a GPU node under the Kubernetes profile (placement.py).
TRAINING_RUN_TAGS = {TRAINING_TAG: "true", **gpu_run_tags()}


class TrainingRunConfig(dg.Config):
    """Launchpad config of `trained_policy`; 0 / "" means the preset's default (see training/presets.py)."""

    preset: str = os.environ.get("TATBOT_TRAIN_PRESET", "tiny_smolvla")
    steps: int = 0
    batch_size: int = 0
    chunk_size: int = 0  # default: the split's stroke length
    device: str = ""
    log_freq: int = 0
    save_freq: int = 0
    wandb_project: str = ""  # empty: wandb off; set WANDB_MODE=online (and log in) to sync
    num_gpus: int = 0  # 0: TATBOT_TRAIN_GPUS (default 1); >1 trains through `accelerate launch --multi_gpu`

    def to_options(self) -> TrainOptions:
        if self.preset not in PRESETS:
            raise dg.Failure(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return TrainOptions(
            steps=self.steps or None,
            batch_size=self.batch_size or None,
            chunk_size=self.chunk_size or None,
            device=self.device or None,
            log_freq=self.log_freq or None,
            save_freq=self.save_freq or None,
            wandb_project=self.wandb_project or None,
            wandb_mode=os.environ.get("WANDB_MODE", "offline"),
            num_gpus=self.num_gpus or train_gpus(),
        )


@dg.asset(
    group_name="training",
    owners=OWNERS,
    kinds={"lerobot", "pytorch"},
    deps=[dg.AssetDep("training_splits")],
    op_tags=TRAINING_RUN_TAGS,
    automation_condition=retrain_condition(),
    description="A LeRobot policy checkpoint trained with `lerobot-train` on splits/latest/train "
    "($TATBOT_PIPELINE_HOME/outputs/train/<run>/checkpoints/last/pretrained_model). A retried run resumes from its "
    "last checkpoint. Presets: " + ", ".join(f"`{n}`" for n in PRESETS) + ".",
    check_specs=[
        dg.AssetCheckSpec("loss_decreased", asset="trained_policy", blocking=True,
                          description="Mean loss of the last quarter of logged steps is below the first quarter's."),
        dg.AssetCheckSpec("grad_norm_stable", asset="trained_policy", blocking=True,
                          description="Gradient norm finite, below 1e3 and not growing 10x over the run."),
        dg.AssetCheckSpec("batch_sane", asset="trained_policy", blocking=True,
                          description="A sampled batch has the policy's image shapes and chunked actions; actions, "
                          "states and normaliser stats lie within the URDF joint limits."),
    ],
)
def trained_policy(context: dg.AssetExecutionContext, config: TrainingRunConfig,
                   pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings
    train_root = (settings.splits_dir / "latest" / "train").resolve()  # pin the version: `latest` may move meanwhile
    run_name = run_dir_name(config.preset, context.run)
    run = train_policy(config.preset, train_root, settings.train_dir / run_name, settings.hf_home,
                       config.to_options(), models_home=settings.home, on_line=context.log.info)
    health = run_health(run.metrics, train_root, run.checkpoint_dir)
    return dg.MaterializeResult(
        metadata={**training_metadata(run, train_root),
                  **new_since_previous_checkpoint(context.instance, settings.splits_dir, train_root)},
        data_version=dg.DataVersion(f"{run_name}@{run.steps}"),
        check_results=[
            dg.AssetCheckResult(check_name=h.name, passed=h.passed, severity=dg.AssetCheckSeverity.ERROR,
                                description=h.message, metadata={k: _meta(v) for k, v in h.details.items()})
            for h in health
        ],
    )


def run_dir_name(preset: str, run: dg.DagsterRun) -> str:
    """`<preset>-<root run id[:8]>`: a re-execution keeps the root run id, so it finds the same dir and resumes."""
    return f"{preset}-{(run.root_run_id or run.run_id)[:8]}"


def training_metadata(run: TrainingRun, train_root) -> dict:
    split = split_identity(train_root)
    m = run.metrics
    metadata = {
        "checkpoint": dg.MetadataValue.path(str(run.checkpoint_dir)),
        "policy_type": run.policy_type,
        "preset": run.preset,
        "steps": run.steps,
        "final_loss": dg.MetadataValue.float(m.final_loss) if m.final_loss is not None else "none logged",
        "resumed_from_step": run.resumed_from if run.resumed_from is not None else "fresh run",
        "split_version": split["version"],
        "split_fingerprints": dg.MetadataValue.json(split["fingerprints"]),
        "split_path": dg.MetadataValue.path(split["source"]),
        "scene": _meta(scene_snapshot(train_root) or {}),
        "code_version": code_version(),
        "command": dg.MetadataValue.md(f"```\n{command_line(list(run.argv), run.num_gpus)}\n```" if run.argv else "not retrained"),
        "log": dg.MetadataValue.path(str(run.log_path)),
        "train_wall_s": round(run.wall_s, 1),
    }
    if m.wandb_url:
        metadata["wandb"] = dg.MetadataValue.url(m.wandb_url)
    if len(m):
        metadata["loss_curve"] = dg.MetadataValue.md(png_markdown(loss_curve(m.step, m.loss, m.grad_norm), "loss"))
    return metadata


# What the loop brought in since the last checkpoint; policy_evaluation shows the same entries for its checkpoint.
LOOP_ENTRIES = ("new_since_previous_checkpoint", "new_recordings", "new_episodes")


def new_since_previous_checkpoint(instance: dg.DagsterInstance, splits_dir: Path, train_root: Path) -> dict:
    """Which recordings and how many episodes this checkpoint's split adds over the previous checkpoint's split."""
    current = split_manifest(train_root)
    if current is None:
        return {LOOP_ENTRIES[0]: "unknown: this split has no split.json"}
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_policy"))  # ours is not logged yet
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    version = meta["split_version"].value if "split_version" in meta else None
    previous = split_manifest(splits_dir / version) if version else None
    changes = split_changes(previous, current)
    new = changes["new_recordings"] + changes["changed_recordings"]
    count = sum(changes["new_episodes"].values())
    if event is None:
        headline = f"first checkpoint: all {count} episodes of {len(new)} recordings are new"
    elif previous is None:
        headline = f"previous checkpoint's split {version or '(unknown)'} is gone: counted against nothing"
    else:
        headline = (f"{count} new episodes (train {changes['new_episodes']['train']}, val "
                    f"{changes['new_episodes']['val']}) from {len(changes['new_recordings'])} new and "
                    f"{len(changes['changed_recordings'])} changed recordings; split {version} -> {changes['version']}")
    lines = [headline] + [f"- {name}" for name in new[:20]] + ([f"- … {len(new) - 20} more"] if len(new) > 20 else [])
    if changes["removed_recordings"] and previous is not None:
        lines.append(f"\nno longer in the split: {', '.join(changes['removed_recordings'][:20])}")
    return {LOOP_ENTRIES[0]: dg.MetadataValue.md("\n".join(lines)), LOOP_ENTRIES[1]: dg.MetadataValue.json(new),
            LOOP_ENTRIES[2]: count}


def _meta(value):
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(json.loads(json.dumps(value, default=str)))
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return value


train_policy_job = dg.define_asset_job("train_policy_job", selection=[trained_policy], tags=TRAINING_RUN_TAGS)

retrain_sensor = dg.AutomationConditionSensorDefinition(
    "training_automation",
    target=[trained_policy],
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags=TRAINING_RUN_TAGS,
    minimum_interval_seconds=30,
    description=f"Retrains `trained_policy` at the first tick of `{RETRAIN_CRON}` (TATBOT_RETRAIN_CRON) after the "
    "split's version changed. Never two trainings at once (run tag limit + a file lock). Turn it off to pause "
    "retraining.",
)

defs = dg.Definitions(assets=[trained_policy], jobs=[train_policy_job], sensors=[retrain_sensor])
