"""`robot_eval`: deploy a checkpoint to the robot node, run `vla_infer` there over MCP, record an `eval_dataset` partition.

Built from ops (not an asset) because it acts on hardware; its result joins the lineage as a partition of the
`eval_dataset` asset, downstream of `trained_policy`. Ops log the materialization themselves (DESIGN.md §3).
"""

import contextlib
import json
import time
from pathlib import Path

import dagster as dg

from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.evaluation.gate import leaderboard_entry, read_promoted, rollout_latency_problem
from tatbot_pipeline.inference.client import RobotNodeError, call_vla_infer
from tatbot_pipeline.inference.deploy import (
    check_checkpoint,
    deploy_local,
    deploy_rsync,
)
from tatbot_pipeline.inference.local_node import embedded_sim_node
from tatbot_pipeline.plots import png_markdown, trajectories
from tatbot_pipeline.recordings.contents import numpy_column

eval_runs = dg.DynamicPartitionsDefinition(name="eval_runs")
EVAL_DATASET = dg.AssetKey("eval_dataset")
DEFAULT_NODE = "hog"

eval_dataset = dg.AssetSpec(
    EVAL_DATASET,
    deps=["trained_policy"],
    partitions_def=eval_runs,
    group_name="robot",
    kinds={"lerobot"},
    owners=OWNERS,
    description="A rollout of a checkpoint on the robot recorded by vla_infer (vla-eval-{scene}-{timestamp}, a LeRobot "
    "v3.0 dataset with the recordings' features). One partition per rollout, written by the `robot_eval` job.",
)


class RobotNode(dg.ConfigurableResource):
    """The robot node that runs `vla_infer`. An empty `mcp_url` starts an embedded local node with the sim robot."""

    name: str = DEFAULT_NODE
    mcp_url: str = ""  # e.g. http://hog:8765/mcp ; empty: embedded sim node on loopback
    token: str = ""  # bearer token (the node's TATBOT_MCP_TOKEN); prefer dg.EnvVar("TATBOT_MCP_TOKEN")
    deploy: str = "local"  # "local": copy on a shared filesystem; "rsync": rsync over ssh to ssh_host
    checkpoints_dir: str = ""  # where checkpoints live on the node; empty: <pipeline home>/deployed
    ssh_host: str = ""  # for deploy=rsync, e.g. tatbot@hog

    @contextlib.contextmanager
    def connect(self, pipeline: PipelineResource):
        """The MCP URL to call: the configured node, or an embedded sim node for as long as the block runs."""
        if self.mcp_url:
            yield self.mcp_url
        else:
            with embedded_sim_node(pipeline.settings) as url:
                yield url


class RolloutConfig(dg.Config):
    """What to roll out and how. An empty checkpoint means the promoted one (see policy_evaluation)."""

    checkpoint: str = ""
    scene: str = "default"
    device: str = "cuda"  # falls back to cpu with a message when the node has no CUDA
    max_steps: int = 40
    fps: int = 10
    enable_realsense: bool = False
    task_prompt: str = ""
    inference: str = "auto"  # "sync" | "async" | "auto": the mode policy_evaluation's measurement calls for


@dg.op(description="The rollout plan: the configured checkpoint, else the promoted one, with scene/device/steps. "
       "The job's only config lives here (ops.resolve_checkpoint.config).")
def resolve_checkpoint(context: dg.OpExecutionContext, config: RolloutConfig, pipeline: PipelineResource) -> dict:
    if config.checkpoint:
        path = Path(config.checkpoint).expanduser()
        path = path if path.is_absolute() else pipeline.settings.home / path
        context.log.info(f"using the configured checkpoint {path}")
    else:
        promoted = read_promoted(pipeline.settings.home)
        if promoted is None:
            raise dg.Failure("no promoted checkpoint yet — materialize policy_evaluation (it promotes a checkpoint that "
                             "passes the gate), or set ops.resolve_checkpoint.config.checkpoint")
        path = Path(promoted["checkpoint"])
        context.log.info(f"using the promoted checkpoint {path} (MAE {promoted['mae']:.4f} rad)")
    return {**config.model_dump(), "checkpoint": str(path)}


@dg.op(description="Refuse a checkpoint with missing files or too slow for the control rate, before anything moves.")
def check_checkpoint_op(context: dg.OpExecutionContext, pipeline: PipelineResource, plan: dict) -> dict:
    checkpoint = plan["checkpoint"]
    problems = check_checkpoint(Path(checkpoint))
    entry = None if problems else leaderboard_entry(pipeline.settings.home, checkpoint)
    if entry:  # the gate's latency rule, for this rollout's rate and device, in the mode the measurement calls for
        problem, mode = rollout_latency_problem(entry, plan["fps"], plan["device"])
        problems += [problem] if problem else []
        if mode and plan["inference"] == "auto":
            plan = {**plan, "inference": mode}
    elif not problems:
        context.log.warning("checkpoint not evaluated offline (not in the leaderboard): latency budget unchecked")
    if problems:
        raise dg.Failure("checkpoint refused: " + "; ".join(problems))
    return plan


@dg.op(description="Copy the checkpoint to where the robot node loads it (shared filesystem or rsync over ssh).")
def deploy_checkpoint(context: dg.OpExecutionContext, pipeline: PipelineResource, robot_node: RobotNode,
                      plan: dict) -> dict:
    checkpoint = plan["checkpoint"]
    if robot_node.deploy == "rsync":
        if not robot_node.ssh_host or not robot_node.checkpoints_dir:
            raise dg.Failure("deploy=rsync needs robot_node.ssh_host and robot_node.checkpoints_dir")
        deployed = deploy_rsync(Path(checkpoint), robot_node.ssh_host, robot_node.checkpoints_dir)
    elif robot_node.deploy == "local":
        dest = Path(robot_node.checkpoints_dir) if robot_node.checkpoints_dir else pipeline.settings.home / "deployed"
        deployed = str(deploy_local(Path(checkpoint), dest))
    else:
        raise dg.Failure(f"unknown deploy mode {robot_node.deploy!r}: use 'local' or 'rsync'")
    context.log.info(f"deployed {checkpoint} -> {robot_node.name}:{deployed}")
    return {**plan, "deployed": deployed}


@dg.op(description="Run vla_infer on the robot node through its MCP server, streaming progress into the run log.")
def run_vla_infer(context: dg.OpExecutionContext, pipeline: PipelineResource, robot_node: RobotNode,
                  plan: dict) -> dict:
    policy_type = json.loads((Path(plan["checkpoint"]) / "config.json").read_text())["type"]
    arguments = {
        "policy": policy_type, "checkpoint_path": plan["deployed"], "scene": plan["scene"], "device": plan["device"],
        "max_steps": plan["max_steps"], "fps": plan["fps"], "enable_realsense": plan["enable_realsense"],
        "record_eval": True, "task_prompt": plan["task_prompt"] or None, "inference": plan["inference"],
    }
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.05 or fraction >= 1.0:  # every ~5%: a readable log, not one line per step
            last[0] = fraction
            context.log.info(f"[{robot_node.name} {fraction:4.0%}] {message}")

    started = time.monotonic()
    with robot_node.connect(pipeline) as url:
        context.log.info(f"calling vla_infer on {robot_node.name} at {url}: {arguments}")
        try:
            out = call_vla_infer(url, arguments, token=robot_node.token or None, on_progress=progress)
        except RobotNodeError as e:
            raise dg.Failure(str(e)) from e
    return {**out.model_dump(), "duration_s": round(time.monotonic() - started, 2), "node": robot_node.name,
            "scene": plan["scene"], "checkpoint": plan["checkpoint"], "deployed": plan["deployed"],
            "policy_type": policy_type}


@dg.op(description="Register the rollout's eval dataset as an eval_dataset partition (lineage: trained_policy); "
       "fail the run with the tool's message when the rollout failed.")
def register_eval_dataset(context: dg.OpExecutionContext, rollout: dict) -> str:
    eval_dir = rollout.get("eval_dir")
    if eval_dir:
        name = Path(eval_dir).name
        context.instance.add_dynamic_partitions(eval_runs.name, [name])
        context.log_event(dg.AssetMaterialization(
            asset_key=EVAL_DATASET, partition=name, metadata=rollout_metadata(rollout)))
    if not rollout["success"]:
        raise dg.Failure(f"rollout failed on {rollout['node']}: {rollout['message']}",
                         metadata={"num_steps": rollout["num_steps"], "eval_dir": str(eval_dir)})
    context.log.info(f"rollout ok: {rollout['num_steps']} steps — {rollout['message']}")
    return eval_dir or ""


def rollout_metadata(rollout: dict) -> dict:
    metadata = {
        "success": rollout["success"],
        "num_steps": rollout["num_steps"],
        "message": dg.MetadataValue.text(rollout["message"]),
        "node": rollout["node"],
        "scene": rollout["scene"],
        "checkpoint": dg.MetadataValue.path(rollout["checkpoint"]),
        "policy_type": rollout["policy_type"],
        "duration_s": dg.MetadataValue.float(rollout["duration_s"]),
        "path": dg.MetadataValue.path(rollout["eval_dir"]),
    }
    plot = commanded_vs_observed(Path(rollout["eval_dir"]))
    if plot:
        metadata["commanded_vs_observed"] = dg.MetadataValue.md(plot)
    return metadata


def commanded_vs_observed(eval_dir: Path) -> str | None:
    """Plot of the rollout when its dataset is readable from here (a remote node's may not be)."""
    import pyarrow.parquet as pq

    files = sorted(eval_dir.glob("data/chunk-*/file-*.parquet"))
    if not files:
        return None
    table = pq.read_table(files[0], columns=["action", "observation.state"])
    commanded = numpy_column(table.column("action"))
    observed = numpy_column(table.column("observation.state"))
    fig = trajectories(observed, commanded, f"{eval_dir.name}: commanded vs observed", commanded_label="commanded")
    return png_markdown(fig, "commanded vs observed")


@dg.job(
    name="robot_eval",
    description="Roll a checkpoint (default: the promoted one) out on the robot node with vla_infer and record the "
    "rollout as an eval_dataset partition. One rollout per robot at a time (run tag `robot`).",
    tags={"robot": DEFAULT_NODE},
    # One op after the other anyway; in-process keeps the embedded node and the robot lock in one process and spares
    # each step a fresh import of torch + lerobot.
    executor_def=dg.in_process_executor,
)
def robot_eval():
    register_eval_dataset(run_vla_infer(deploy_checkpoint(check_checkpoint_op(resolve_checkpoint()))))


defs = dg.Definitions(assets=[eval_dataset], jobs=[robot_eval], resources={"robot_node": RobotNode()})
