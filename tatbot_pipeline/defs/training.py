"""`trained_policy`: lerobot-train on the latest train split, its health checks, and nightly retraining on new data."""


import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.datasets.build import resolve_latest
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import retrain_condition, with_condition
from tatbot_pipeline.defs.metadata import headline_first, number, to_metadata
from tatbot_pipeline.defs.placement import gpu_run_tags
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.training.health import HEALTH_CHECKS
from tatbot_pipeline.training.lineage import new_since_previous
from tatbot_pipeline.training.presets import PRESETS, TrainOptions
from tatbot_pipeline.training.training_report import report_training
from tatbot_pipeline.training.preflight import PreflightFailed
from tatbot_pipeline.training.runner import TrainingFailed, train_policy, training_lock, unfinished_runs

# dagster.yaml limits runs with this tag to one at a time; the runner's file lock covers untagged launches.
TRAINING_TAG = "tatbot/training"
CHECKS = HEALTH_CHECKS  # one asset check per health check of training/health.py
# A training whose run died without a step failing (its worker or node killed, the run marked failed by the code
# server or the run monitor) is re-executed from failure by the daemon (dagster.yaml: run_retries) up to this many
# times; the re-execution keeps the root run id, so it resumes the same run dir from its last checkpoint. A step
# that failed (bad data, a trainer that exited with an error) is not retried: it would fail the same way.
TRAINING_RETRIES = 2


def training_run_tags(settings: PipelineSettings) -> dict[str, str]:
    """Run tags of every training launch: the queue limit, the automatic retries, and a GPU node under the
    Kubernetes profile."""
    return {TRAINING_TAG: "true", "dagster/max_retries": str(TRAINING_RETRIES),
            "dagster/retry_strategy": "FROM_FAILURE", "dagster/retry_on_asset_or_op_failure": "false",
            **gpu_run_tags(settings.train_gpus)}


class TrainingRunConfig(dg.Config):
    """Launchpad config of trained_policy; an empty field keeps the preset's default (training/presets.py)."""

    preset: str | None = Field(None, description=f"one of {', '.join(PRESETS)}; empty: TATBOT_TRAIN_PRESET, else "
                               "tiny_smolvla (CPU, seconds, for tests and the demo)")
    steps: int | None = Field(None, description="training steps (a retried run resumes up to this)")
    batch_size: int | None = Field(None, description="per GPU when training on several")
    chunk_size: int | None = Field(None, description="action chunk length; empty: the split's stroke length")
    device: str | None = Field(None, description="'cuda' or 'cpu'; empty: the preset's")
    log_freq: int | None = Field(None, description="log the loss every this many steps")
    save_freq: int | None = Field(None, description="save a checkpoint every this many steps (the val loss is "
                                  "computed at the saved ones)")
    wandb_project: str | None = Field(None, description="log to this wandb project (offline unless WANDB_MODE=online "
                                      "and logged in); empty: wandb off")
    num_gpus: int | None = Field(None, description="GPUs to train on; empty: TATBOT_TRAIN_GPUS (default 1); more "
                                 "than 1 trains through `accelerate launch --multi_gpu`")

    def preset_name(self, settings: PipelineSettings) -> str:
        preset = self.preset or settings.train_preset
        if preset not in PRESETS:
            raise dg.Failure(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        return preset

    def to_options(self, settings: PipelineSettings) -> TrainOptions:
        return TrainOptions(
            steps=self.steps, batch_size=self.batch_size, chunk_size=self.chunk_size, device=self.device,
            log_freq=self.log_freq, save_freq=self.save_freq, wandb_project=self.wandb_project,
            wandb_mode=settings.wandb_mode, num_gpus=self.num_gpus or settings.train_gpus,
        )


@dg.asset(
    group_name="training",
    owners=OWNERS,
    kinds={"lerobot", "pytorch"},
    deps=[dg.AssetDep("training_splits")],
    description="A LeRobot policy checkpoint trained with `lerobot-train` on the newest split's `train` side "
    "(`$TATBOT_PIPELINE_HOME/outputs/train/<run>/checkpoints/last/pretrained_model`), with its loss and validation "
    "loss curves. A retried run resumes from its last checkpoint; a run whose worker died is retried by the daemon "
    f"up to {TRAINING_RETRIES} times. Presets: " + ", ".join(f"`{n}`" for n in PRESETS) + ".",
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
    version_dir = resolve_latest(settings.splits_dir)  # pinned now: `latest` may move while we train
    train_root = version_dir / "train"
    preset = config.preset_name(settings)
    run_name = run_dir_name(preset, context.run)
    # One lock over the training, its validation loss and health checks: a queued training starts after all of it.
    with training_lock(settings.train_dir, context.log.info):
        note_unfinished_runs(settings.train_dir, run_name, preset, train_root, context.log.warning)
        try:
            run = train_policy(preset, train_root, settings.train_dir / run_name, settings.hf_home,
                               config.to_options(settings), models_home=settings.home, on_line=context.log.info,
                               lock=False)
        except PreflightFailed as e:
            raise dg.Failure(f"preflight: {e}", allow_retries=False) from e
        except TrainingFailed as e:
            raise dg.Failure(str(e).splitlines()[0], metadata={"details": dg.MetadataValue.text(str(e))}) from e
        report = report_training(run, train_root, context.log.info)
    loop = new_since_previous_checkpoint(context.instance, settings.splits_dir, train_root)
    judged = f"judged on {len(run.metrics)} logged steps of {run.attempts} attempt{'s' * (run.attempts != 1)}"
    return dg.MaterializeResult(
        metadata=headline_first(report.summary, {**to_metadata(report.first), **loop}, to_metadata(report.last)),
        data_version=dg.DataVersion(f"{run_name}@{run.steps}"),
        check_results=[
            dg.AssetCheckResult(check_name=h.name, passed=h.passed, severity=dg.AssetCheckSeverity.ERROR,
                                description=f"{h.message} ({judged})",
                                metadata={**{k: _meta(v) for k, v in h.details.items()},
                                          "attempts": run.attempts, "logged_steps": len(run.metrics)})
            for h in report.health
        ],
    )


def run_dir_name(preset: str, run: dg.DagsterRun) -> str:
    """`<preset>-<root run id[:8]>`: a re-execution keeps the root run id, so it finds the same dir and resumes."""
    return f"{preset}-{(run.root_run_id or run.run_id)[:8]}"


def note_unfinished_runs(train_dir: Path, run_name: str, preset: str, train_root: Path, warn) -> list[Path]:
    """Say where earlier runs of this preset on this split stopped short, when this run starts a new dir: they are
    left as they are (a re-execution of their run resumes them), never silently abandoned."""
    if (train_dir / run_name).exists():
        return []
    left = unfinished_runs(train_dir, preset, train_root)
    for run_dir, step in left:
        warn(f"starting over in {train_dir / run_name}; an earlier run of {preset} on this split stopped at step "
             f"{step} in {run_dir}: re-execute that run from failure (`tatbot-pipeline rerun <its run id>`, or the UI) "
             "to resume it instead")
    return [d for d, _ in left]


def new_since_previous_checkpoint(instance: dg.DagsterInstance, splits_dir: Path, train_root: Path) -> dict:
    """The loop's entries against the split of the latest trained_policy materialization (ours is not logged yet)."""
    event = instance.get_latest_materialization_event(dg.AssetKey("trained_policy"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    version = meta["split_version"].value if "split_version" in meta else None
    return to_metadata(new_since_previous(splits_dir, train_root, version, first=event is None))


def _meta(value):
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(json.loads(json.dumps(value, default=str)))
    if isinstance(value, float):
        return number(value)
    return value


def build(settings: PipelineSettings) -> dg.Definitions:
    tags = training_run_tags(settings)
    job = dg.define_asset_job("train_policy_job", selection=[trained_policy], tags=tags)
    retrain_sensor = dg.AutomationConditionSensorDefinition(
        "training_automation",
        target=[trained_policy.key],
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags=tags,
        minimum_interval_seconds=30,
        description=f"Retrains trained_policy at the first tick of {settings.retrain_cron} (TATBOT_RETRAIN_CRON) "
        "after the split's version changed. Never two trainings at once (run tag limit + a file lock). Turn it off "
        "to pause retraining.",
    )
    return dg.Definitions(assets=[with_condition(trained_policy, retrain_condition(settings.retrain_cron))],
                          jobs=[job], sensors=[retrain_sensor])
