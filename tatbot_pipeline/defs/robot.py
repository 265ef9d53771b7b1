"""`robot_eval`: deploy a checkpoint to the robot node, run `vla_infer` there over MCP, record an `eval_dataset` partition.

Built from ops (not an asset) because it acts on hardware, and it is never automated: a person decides when a robot
next to a person moves (and on the real arms, an operator at the robot arms it first). Its result joins the lineage
as a partition of the `eval_dataset` asset, downstream of the `sim_evaluation` that promoted the checkpoint; the
ops log the materialization and the rollout-quality check themselves (DESIGN.md §3). Each op is a few lines over the
core: inference/plan.py (what to roll out, and whether it may be), inference/delivery.py, inference/client.py,
inference/quality.py.
"""

import contextlib
import json
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from tatbot_pipeline.checkpoints import run_and_step
from tatbot_pipeline.config import DEFAULT_ROBOT_NODE, PipelineSettings
from tatbot_pipeline.console import report_progress
from tatbot_pipeline.defs import OWNERS, partitioned_checks
from tatbot_pipeline.defs.metadata import headline_first, number
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.display import shorten_paths
from tatbot_pipeline.evaluation.calibration import is_hardware_rollout, pair_with_sim
from tatbot_pipeline.evaluation.sim import val_split_for
from tatbot_pipeline.inference.client import RobotNodeError, call_vla_infer
from tatbot_pipeline.inference.delivery import DeployTarget, deploy
from tatbot_pipeline.inference.eval_record import EVAL_META
from tatbot_pipeline.inference.local_node import embedded_sim_node
from tatbot_pipeline.inference.plan import PlanError, RolloutPlan, RolloutResult, check_plan, plan_rollout
from tatbot_pipeline.inference.quality import QualityLimits, rollout_quality
from tatbot_pipeline.inference.rollout import VLAInferOutput
from tatbot_pipeline.promotion import simulated
from tatbot_pipeline.robot.base import RobotError
from tatbot_pipeline.robot.sim_controllers import SimControllerError
from tatbot_pipeline.plots import commanded_vs_observed, png_markdown

eval_runs = dg.DynamicPartitionsDefinition(name="eval_runs")
# Metadata keys the rollout_quality check reads back.
RATE_LIMITED, TRACKING = "rate_limited", "tracking_err_rad"
EVAL_DATASET = dg.AssetKey("eval_dataset")
QUALITY_CHECK = "rollout_quality"

eval_dataset = dg.AssetSpec(
    EVAL_DATASET,
    deps=["sim_evaluation"],
    partitions_def=eval_runs,
    group_name="robot",
    kinds={"lerobot"},
    owners=OWNERS,
    description="A rollout of a checkpoint on the robot, recorded by vla_infer (`vla-eval-<scene>-<timestamp>`, a "
    "LeRobot v3.0 dataset with the recordings' features). One partition per rollout, written by the manual "
    "`robot_eval` job; upstream is the sim_evaluation that, after policy_evaluation, promoted the checkpoint. Its "
    "metadata names the checkpoint by digest and says when it was NOT EVALUATED or NOT SIMULATED.",
)


# What a rollout's node is called when the job served it itself (RobotNode with no mcp_url): the sim backend on
# loopback, in the run's process.
EMBEDDED_NODE = "embedded sim node"
# The robot name a rollout records (meta/vla_eval.json `robot`) -> the backend (TATBOT_ROBOT_BACKEND) that has it.
BACKEND_OF_ROBOT = {"tatbot-sim": "sim", "tatbot": "tatbot"}


class RobotNode(dg.ConfigurableResource):
    """The robot node that runs vla_infer. An empty mcp_url starts an embedded local node with the sim robot.

    The bearer token is never configuration: it comes from TATBOT_MCP_TOKEN in the environment of the process that
    runs the job, so it never lands in a run's stored config."""

    name: str = Field(DEFAULT_ROBOT_NODE, description="the node's name, in logs, metadata and tags (default: "
                      "TATBOT_ROBOT_NODE, else hog); with no mcp_url they name the embedded sim node instead")
    mcp_url: str = Field("", description="its vla_infer MCP endpoint, e.g. http://hog:8765/mcp; empty: an embedded "
                         "sim node on loopback")
    deploy: str = Field("local", description="how checkpoints reach the node: 'local' (it mounts the same "
                        "filesystem) or 'rsync' (over ssh to ssh_host)")
    checkpoints_dir: str = Field("", description="where checkpoints live on the node; empty: <pipeline home>/deployed")
    ssh_host: str = Field("", description="for deploy=rsync, e.g. tatbot@hog (key-based ssh)")
    ssh: str = Field("ssh -o BatchMode=yes", description="for deploy=rsync: the remote shell rsync runs, with any "
                     "port or identity options (e.g. 'ssh -o BatchMode=yes -p 2222')")

    @contextlib.contextmanager
    def connect(self, pipeline: PipelineResource):
        """The MCP URL to call: the configured node, or an embedded sim node for as long as the block runs."""
        if self.mcp_url:
            yield self.mcp_url
        else:
            with embedded_sim_node(pipeline.settings) as url:
                yield url

    @property
    def ran_on(self) -> str:
        """The node a rollout really runs on: the configured one, or the embedded sim node when no mcp_url is set
        (the configured name, e.g. hog, is then never contacted)."""
        return self.name if self.mcp_url else EMBEDDED_NODE

    @property
    def target(self) -> DeployTarget:
        return DeployTarget(mode=self.deploy, checkpoints_dir=self.checkpoints_dir, ssh_host=self.ssh_host, ssh=self.ssh)


class RolloutConfig(dg.Config):
    """What to roll out and how. An empty checkpoint means the promoted one (see policy_evaluation)."""

    checkpoint: str = Field("", description="a pretrained_model dir (relative: under the pipeline home); empty: the "
                            "checkpoint policy_evaluation promoted")
    scene: str = Field("default", description="scene name on the node (<scenes dir>/<scene>.yaml; 'default' is "
                       "built in)")
    device: str = Field("cuda", description="'cuda' or 'cpu' on the node; cuda falls back to cpu with a note")
    max_steps: int = Field(40, description="control steps to run (the node caps it too)")
    fps: int = Field(10, description="control rate in Hz")
    enable_realsense: bool = Field(False, description="use the scene's RealSense cameras (real robot)")
    task_prompt: str = Field("", description="task text for the policy; empty: the scene's task")
    inference: str = Field("auto", description="'sync', 'async' (chunk inference off the control thread) or 'auto': "
                           "the mode the checkpoint's measured chunk latency calls for")
    allow_unsimulated: bool = Field(False, description="roll out a checkpoint with no passing sim_evaluation "
                                    "(refused otherwise); recorded in the eval dataset's metadata and the run's tags")


@dg.op(description="The rollout plan: the configured checkpoint, else the promoted one, with scene/device/steps. "
       "The job's only config lives here (ops.resolve_checkpoint.config).")
def resolve_checkpoint(context: dg.OpExecutionContext, config: RolloutConfig, pipeline: PipelineResource) -> RolloutPlan:
    request = config.model_dump(exclude={"checkpoint"}) | {"task_prompt": config.task_prompt or None}
    try:
        plan = plan_rollout(config.checkpoint, pipeline.settings, **request)
    except PlanError as e:
        raise dg.Failure(str(e)) from None
    context.log.info(f"rolling out the {plan.source} checkpoint {plan.checkpoint} ({plan.policy_type})")
    return plan


@dg.op(description="Refuse a checkpoint with missing files, files changed since it was evaluated, or too slow for "
       "the control rate, before anything moves.")
def check_checkpoint_op(context: dg.OpExecutionContext, pipeline: PipelineResource, plan: RolloutPlan) -> RolloutPlan:
    plan, problems, note = check_plan(plan, pipeline.settings)
    if problems:
        raise dg.Failure("checkpoint refused: " + "; ".join(problems))
    if note:
        context.log.info(note)
    return plan


@dg.op(description="Copy the checkpoint to where the robot node loads it (shared filesystem or rsync over ssh).")
def deploy_checkpoint(context: dg.OpExecutionContext, pipeline: PipelineResource, robot_node: RobotNode,
                      plan: RolloutPlan) -> RolloutPlan:
    try:
        deployed = deploy(plan.checkpoint, robot_node.target, pipeline.settings, plan.sha256)
    except (ValueError, RuntimeError) as e:  # DigestMismatch is a RuntimeError: the copy is not the evaluated files
        raise dg.Failure(str(e)) from None
    context.log.info(f"deployed {plan.checkpoint} -> {deployed} for {robot_node.ran_on} (sha256 {plan.sha256[:12]}… "
                     "verified)")
    return plan.with_deployment(deployed)


@dg.op(description="Run vla_infer on the robot node through its MCP server, streaming progress into the run log.")
def run_vla_infer(context: dg.OpExecutionContext, pipeline: PipelineResource, robot_node: RobotNode,
                  plan: RolloutPlan) -> RolloutResult:
    request = plan.request()
    started = time.monotonic()
    node = robot_node.ran_on
    context.instance.add_run_tags(context.run_id, rollout_tags(node, plan))
    with robot_node.connect(pipeline) as url:
        context.log.info(f"calling vla_infer on {node} at {url}: {request.model_dump(exclude_none=True)}")
        try:
            out = call_vla_infer(url, request.model_dump(), token=pipeline.settings.mcp_token,
                                 on_progress=progress_logger(context, node, plan.max_steps))
        except RobotNodeError as e:
            raise dg.Failure(str(e)) from e
    return RolloutResult(output=out, plan=plan, node=node, duration_s=time.monotonic() - started)


def progress_logger(context: dg.OpExecutionContext, node: str, steps: int):
    """A readable run log: one line per ~5 % of the rollout, not one per step (and a bar on a CLI's terminal)."""
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        report_progress("rollout", round(fraction * steps), steps, message)
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            context.log.info(f"[{node} {fraction:4.0%}] {message}")

    return progress


def rollout_tags(node: str, plan: RolloutPlan) -> dict[str, str]:
    """Tag values Dagster accepts (<= 63 characters of [A-Za-z0-9_.-]), each chip short enough to be read whole in
    the Runs list at 1600 px (about 40 characters with its key)."""
    clean = lambda v: "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(v))[:63]  # noqa: E731
    return {"tatbot/robot": clean(node), "tatbot/scene": clean(plan.scene),
            "tatbot/checkpoint": clean(checkpoint_tag(plan.checkpoint)),
            "tatbot/checkpoint_sha256": plan.sha256[:12], "tatbot/evaluated": "yes" if plan.judged else "no",
            "tatbot/simulated": "yes" if simulated(plan.evaluation) else
            ("no-allow_unsimulated" if plan.allow_unsimulated else "no")}


def checkpoint_tag(checkpoint: Path) -> str:
    """A checkpoint as a Runs-list chip shows it whole: '<training run>-<step>' (054ff5e6-000200: the training run's
    id in the Runs list, and the step), the part that tells checkpoints apart; the preset and the whole name are on
    the rollout's page. A dir outside lerobot-train's layout: its name."""
    found = run_and_step(Path(checkpoint).resolve())
    if found is None:
        return Path(checkpoint).name
    run, step = found
    return f"{run.rsplit('-', 1)[-1]}-{step}"


@dg.op(description="Register the rollout's eval dataset as an eval_dataset partition with its rollout-quality check; "
       "fail the run with the tool's message when the rollout failed.")
def register_eval_dataset(context: dg.OpExecutionContext, pipeline: PipelineResource, rollout: RolloutResult) -> str:
    out, name = rollout.output, rollout.eval_name
    if name:
        twin = paired_twin(context, pipeline.settings, rollout)
        context.instance.add_dynamic_partitions(eval_runs.name, [name])
        quality = rollout_quality(out)
        # The verdict on the run as well, short enough for the Runs list's tag chips: how each rollout went.
        context.instance.add_run_tags(context.run_id, {"tatbot/rollout": rollout.verdict()})
        tags = rollout_tags(rollout.node, rollout.plan)
        context.log_event(dg.AssetMaterialization(asset_key=EVAL_DATASET, partition=name, tags=tags,
                                                  metadata=rollout_metadata(rollout, quality.describe(), twin)))
        context.log_event(dg.AssetCheckEvaluation(
            asset_key=EVAL_DATASET, check_name=QUALITY_CHECK, partition=name, passed=quality.passed,
            severity=dg.AssetCheckSeverity.WARN, description=f"{name}: {quality.describe()}",
            metadata={"clamped_fraction": number(quality.clamped_fraction),
                      "rate_limited_fraction": number(quality.rate_limited_fraction),
                      "max_tracking_error_rad": number(out.max_tracking_error_rad)}))
    if not out.success:
        if not name:
            context.instance.add_run_tags(context.run_id, {"tatbot/rollout": "FAILED"})
        raise dg.Failure(f"rollout failed on {rollout.node}: {out.message}",
                         metadata={"steps": out.num_steps, "eval_dir": str(out.eval_dir)})
    context.log.info(f"rollout ok: {out.num_steps} steps — {out.message}")
    return out.eval_dir or ""


def paired_twin(context: dg.OpExecutionContext, settings: PipelineSettings, rollout: RolloutResult) -> dict | str:
    """A hardware rollout replayed on the calibrated simulated arms (evaluation/calibration.py `pair_with_sim`): the
    sim-vs-real gap, or why there is none. sim_calibration fits on these rollouts too."""
    eval_dir = Path(str(rollout.output.eval_dir))
    if not (eval_dir / "meta" / "info.json").is_file():
        return f"not paired: {eval_dir} is not readable from this host"
    if not is_hardware_rollout(eval_dir):
        return "not paired: a rollout on the sim backend (no arm to compare the twin with)"
    try:
        plant = settings.calibrated_scene(val_split_for(rollout.plan.checkpoint))
    except FileNotFoundError:
        plant = None
    context.log.info(f"pairing the rollout with its simulation on {plant or 'trossen-arm-sim gains (not calibrated)'}")
    try:
        return pair_with_sim(eval_dir, settings.home / "outputs" / "sim_twin" / eval_dir.name, plant)
    except (RobotError, SimControllerError, RuntimeError, OSError, ValueError) as e:
        context.log.warning(f"the rollout could not be replayed in simulation: {e}")
        return f"not paired: {e}"


def backend_of(rollout: RolloutResult) -> str:
    """The robot backend that ran the rollout, as its eval dataset records it (meta/vla_eval.json); the embedded
    node's is sim by construction; a remote node's dataset unreadable from here leaves it unknown."""
    try:
        robot = json.loads((Path(str(rollout.output.eval_dir)) / EVAL_META).read_text())["robot"]
        return BACKEND_OF_ROBOT.get(robot, robot)
    except (OSError, ValueError, KeyError, TypeError):
        return "sim" if rollout.node == EMBEDDED_NODE else "unknown (its eval dataset is not readable from here)"


def rollout_metadata(rollout: RolloutResult, quality: str, twin: dict | str = "not paired") -> dict:
    out, plan = rollout.output, rollout.plan
    backend = backend_of(rollout)
    entries = {
        "success": out.success,
        "steps": number(out.num_steps),
        "max_steps": number(plan.max_steps),
        "actions_clamped": number(out.actions_clamped),
        # Keys of 18 characters at most (defs/metadata.py): the asset overview's table must keep room for the digest.
        RATE_LIMITED: number(out.actions_rate_limited),
        TRACKING: number(out.max_tracking_error_rad),
        "duration_s": number(rollout.duration_s),
        "node": rollout.node,
        "backend": backend,
        "scene": plan.scene,
        "checkpoint": dg.MetadataValue.path(str(plan.checkpoint)),
        **rollout.lineage(),
        "policy_type": plan.policy_type,
        "stop_reason": out.stop_reason or "none",
        "armed_by": out.armed_by or ("not needed (sim backend)" if backend == "sim" else "—"),
        "sim_vs_real_gap_mm": number(twin["tip_p95_mm"]) if isinstance(twin, dict) else twin,
        "path": dg.MetadataValue.path(str(out.eval_dir)),
    }
    last = {"message": dg.MetadataValue.text(shorten_paths(out.message))}  # the paths are whole above
    if isinstance(twin, dict):
        last["sim_twin"] = dg.MetadataValue.json(twin)
    fig = commanded_vs_observed(Path(str(out.eval_dir)))
    if fig is not None:  # a remote node's dataset may not be readable from here
        last["cmd_vs_observed"] = dg.MetadataValue.md(png_markdown(fig, "commanded vs observed"))
    return headline_first(rollout.summary(quality, backend), entries, last)


def _rollout_quality_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    name = context.partition_key
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=EVAL_DATASET, asset_partitions=[name]), limit=1).records
    if not records:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"{name}: no rollout recorded under this partition")
    meta = records[0].asset_materialization.metadata
    # Keys as recorded, and as rollouts recorded before they were shortened.
    value = lambda key, old: meta[key].value if key in meta else meta[old].value if old in meta else None  # noqa: E731
    tracking = value(TRACKING, "max_tracking_error_rad")
    out = VLAInferOutput(num_steps=int(value("steps", "steps") or 0),
                         actions_clamped=int(value("actions_clamped", "actions_clamped") or 0),
                         actions_rate_limited=int(value(RATE_LIMITED, "actions_rate_limited") or 0),
                         max_tracking_error_rad=tracking if isinstance(tracking, float) else None)
    quality = rollout_quality(out)
    return dg.AssetCheckResult(passed=quality.passed, severity=dg.AssetCheckSeverity.WARN,
                               description=f"{name}: {quality.describe()}")



_LIMITS = QualityLimits()
with partitioned_checks():
    rollout_quality_check = dg.asset_check(
        asset=EVAL_DATASET, name=QUALITY_CHECK, partitions_def=eval_runs,
        description=f"Warns when a rollout needed the safety envelope on many steps (clamped > "
        f"{_LIMITS.max_clamped_fraction:.0%} or rate-limited > {_LIMITS.max_rate_limited_fraction:.0%} of them) or "
        f"its arms lagged their commands by more than {_LIMITS.max_tracking_error_rad} rad. Evaluated by robot_eval "
        "when it records the rollout; re-running it re-reads the partition's metadata.",
    )(_rollout_quality_check)

@dg.graph
def robot_eval():
    register_eval_dataset(run_vla_infer(deploy_checkpoint(check_checkpoint_op(resolve_checkpoint()))))


def build(settings: PipelineSettings) -> dg.Definitions:
    """The job's run tag and the launchpad's default node follow the configured node (TATBOT_ROBOT_NODE)."""
    job = robot_eval.to_job(
        name="robot_eval",
        description="MANUAL ONLY — moves a robot next to a person, so no sensor or schedule starts it. Rolls a "
        "checkpoint (default: the promoted one) out on the robot node with vla_infer and records the rollout as an "
        "eval_dataset partition. One rollout per robot at a time (run tag robot, and a lock on the node).",
        tags={"robot": settings.robot_node},
        # One op after the other anyway; in-process keeps the embedded node and the robot lock in one process and
        # spares each step a fresh import of torch + lerobot.
        executor_def=dg.in_process_executor,
    )
    return dg.Definitions(assets=[eval_dataset], asset_checks=[rollout_quality_check], jobs=[job],
                          resources={"robot_node": RobotNode(name=settings.robot_node)})
