"""`sim_evaluation`: the checkpoint that passed the open-loop gate runs closed-loop on two simulated arm controllers
(trossen-arm-sim through the real `trossen_arm` driver) before it may be promoted (evaluation/sim.py).

It runs by itself after every policy_evaluation whose open-loop gate passed: the simulator needs no operator and
moves nothing real. Promotion needs both gates (promotion.record_sim), so the first closed loop of a checkpoint is
never the robot next to a person.
"""

import base64
from pathlib import Path

import dagster as dg
from pydantic import Field

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import sim_condition
from tatbot_pipeline.defs.metadata import GATE_NAME_HELP, gate_table, headline_first, named_gate, number
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.evaluation.sim import SimEvaluation, evaluate_in_sim
from tatbot_pipeline.evaluation.sim_gate import SimGateDecision, SimGateLimits, decide_sim
from tatbot_pipeline.inference.delivery import deployed_name
from tatbot_pipeline.promotion import (leaderboard_markdown, promotion_status, promotion_tag, read_leaderboard,
                                      read_promoted, record_sim)

EVALUATED = dg.AssetKey("policy_evaluation")


class SimEvaluationConfig(dg.Config):
    """Launchpad config of sim_evaluation. Empty limits: the lab's sim gate (TATBOT_SIM_GATE_*), else the defaults
    of evaluation/sim_gate.py: SimGateLimits."""

    episodes: int = Field(0, description="held-out strokes to roll out (0: TATBOT_SIM_EPISODES, default 8)")
    device: str = Field("cpu", description="where the policy runs")
    tip_deviation_mm: float | None = Field(None, description="a stroke is within when its needle-tip deviation p95 "
                                           "is at most this (mm)")
    min_share_within: float | None = Field(None, description="share of strokes that must be within (0–1)")
    max_tip_error_p95_mm: float | None = Field(None, description="p95 needle-tip deviation over all steps (mm)")
    max_contact_force_n: float | None = Field(None, description="peak force of any contact outside the needle (N)")
    max_stops: int | None = Field(None, description="strokes a safety monitor may stop (default 0)")
    gate_name: str = Field("", description=GATE_NAME_HELP)

    def limits(self, settings: PipelineSettings) -> SimGateLimits:
        chosen = self.model_dump(exclude={"episodes", "device", "gate_name"})
        return SimGateLimits.for_lab(settings, **chosen)


def judged_checkpoint(instance: dg.DagsterInstance) -> dict:
    """What the newest policy_evaluation judged: checkpoint, its digest, the val split, its run."""
    event = instance.get_latest_materialization_event(EVALUATED)
    if event is None or event.asset_materialization is None:
        raise dg.Failure("no policy_evaluation yet — a checkpoint is simulated after its open-loop evaluation")
    meta = event.asset_materialization.metadata
    missing = [k for k in ("checkpoint", "checkpoint_sha256", "val_split") if k not in meta]
    if missing:
        raise dg.Failure(f"policy_evaluation of run {event.run_id} has no {', '.join(missing)}: re-run it")
    return {k: str(meta[k].value) for k in ("checkpoint", "checkpoint_sha256", "val_split")} | {"run": event.run_id}


@dg.asset(
    deps=[dg.AssetDep(EVALUATED)],
    group_name="evaluation",
    kinds={"mujoco", "lerobot"},
    owners=OWNERS,
    automation_condition=sim_condition(),
    description="The checkpoint that passed the open-loop gate, rolled out closed-loop on held-out strokes on two "
    "simulated arm controllers (trossen-arm-sim, MuJoCo) through the real trossen_arm driver and the same loop, "
    "envelope and monitors as vla_infer; cameras replay each stroke's recorded frames. Each stroke's recorded "
    "actions are replayed first (the expert): needle-tip deviation is measured from the expert's simulated path "
    "(mm), against a noise floor measured by replaying it twice; contacts and stops the expert also has are the "
    "model's. Runs on sim_calibration's fitted arms when the split has one. Promotion needs this sim gate too.",
    check_specs=[dg.AssetCheckSpec("sim_gate", asset="sim_evaluation",
                                   description="Passes when the sim gate passed: enough strokes within the tip "
                                   "deviation limit, p95 tip deviation, no contact above the force limit outside "
                                   "the needle, no stop.")],
)
def sim_evaluation(context: dg.AssetExecutionContext, config: SimEvaluationConfig,
                   pipeline: PipelineResource) -> dg.MaterializeResult:
    settings = pipeline.settings
    judged = judged_checkpoint(context.instance)
    out_dir = settings.sim_dir(judged["checkpoint_sha256"])
    context.log.info(f"simulating {judged['checkpoint']} on {judged['val_split']} -> {out_dir}")
    plant = settings.calibrated_scene(Path(judged["val_split"]))
    context.log.info(f"simulated arms: {plant or 'not calibrated for this split (sim_calibration): trossen-arm-sim gains'}")
    result = evaluate_in_sim(Path(judged["checkpoint"]), Path(judged["val_split"]), out_dir,
                             episodes=config.episodes or settings.sim_episodes, limits=config.limits(settings),
                             rollout_limits=settings.rollout_limits, device=config.device, progress=context.log.info,
                             plant_scene=plant)
    entry = record_sim(settings, judged["checkpoint"], judged["checkpoint_sha256"],
                       sim_summary(result) | {"gate_name": config.gate_name or None})
    promoted = read_promoted(settings)  # the promotion record: every page and tag words it with promotion_status
    headline = named_gate(result.decision.headline(), config.gate_name)
    summary = f"{promotion_status(entry, promoted, deployed_name(Path(judged['checkpoint'])))} — {headline}"
    lab = None
    if config.gate_name:  # limits set for this run: what the lab's own gate says of the same measurements, beside it
        lab = decide_sim(result.records, result.tip_error_mm_p95, SimGateLimits.for_lab(settings),
                         result.noise_floor_mm)
        summary += f" | the lab's gate on the same strokes: {lab.headline()}"
    context.log.info(summary)  # the log line, the check's description and the metadata's summary
    # On the run too, short enough for the Runs list's tag chips (the summary names the checkpoint, gate and reasons).
    context.instance.add_run_tags(context.run.run_id, {"tatbot/promotion": promotion_tag(entry, promoted)})
    metadata = sim_metadata(result, entry, judged, read_leaderboard(settings), promoted, summary,
                            gate_names(config.gate_name, settings) if lab else ("", ""), lab)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(check_name="sim_gate", passed=result.passed,
                                           severity=dg.AssetCheckSeverity.WARN, description=summary)],
    )


def gate_names(gate_name: str, settings: PipelineSettings) -> tuple[str, str]:
    """The gate table's two limit columns: the run's named limits, and the lab's, said to be the defaults when no
    TATBOT_SIM_GATE_* changes them (evaluation/sim_gate.py: SimGateLimits)."""
    lab = "the lab's gate (defaults)" if SimGateLimits.for_lab(settings) == SimGateLimits() else \
        "the lab's gate (TATBOT_SIM_GATE_*)"
    return gate_name, lab


def sim_summary(result: SimEvaluation) -> dict:
    """The figures promoted.json and the leaderboard carry."""
    data = result.to_json()
    return {k: data[k] for k in ("passed", "strokes", "tip_error_mm_p95", "reasons", "headline", "inference",
                                 "out_dir")} | {"limits": data["limits"]}


def sim_metadata(result: SimEvaluation, entry: dict, judged: dict, board: list[dict], promoted: dict | None,
                 summary: str, names: tuple[str, str] = ("", ""), lab: SimGateDecision | None = None) -> dict:
    """`lab`: the lab's gate on the same strokes when the run set its own limits, shown beside them in `gate`."""
    limits = result.limits
    entries = {
        "promoted": entry["promoted"],
        "sim_gate_passed": result.passed,
        **({"lab_gate_passed": lab.passed} if lab is not None else {}),
        "gate": gate_table(result.decision.criteria, lab.criteria if lab is not None else None, names),
        "tip_error_p95_mm": number(result.tip_error_mm_p95),
        "noise_floor_mm": number(result.noise_floor_mm),
        "expert_tip_p95_mm": number(result.expert_tip_p95_mm),
        "plant": result.plant,
        "strokes": number(result.strokes),
        "stops": number(sum(1 for r in result.records if r.counted_stop)),
        "missed_ticks": number(sum(r.missed_ticks for r in result.records)),
        "actions_clamped": number(sum(r.actions_clamped for r in result.records)),
        "peak_force_n": number(max((r.peak_contact_force_n for r in result.records), default=0.0)),
        "parked": not any(r.park_failure for r in result.records),
        "wrong_way_rad": number(result.worst_wrong_way["worst_rad"] if result.worst_wrong_way else None),
        "inference": result.inference,
        "checkpoint": dg.MetadataValue.path(judged["checkpoint"]),
        "checkpoint_sha256": judged["checkpoint_sha256"],
        "val_split": dg.MetadataValue.path(judged["val_split"]),
        "rollouts": dg.MetadataValue.path(str(Path(result.out_dir) / "rollouts")),
    }
    last = {
        "strokes_table": dg.MetadataValue.md(strokes_markdown(result)),
        "drawn_vs_planned": dg.MetadataValue.md(plots_markdown(result)),
        "leaderboard": dg.MetadataValue.md(leaderboard_markdown(board, promoted)),
        "limits": dg.MetadataValue.json({**vars(limits), "needle_bodies": list(limits.needle_bodies)}),
    }
    return headline_first(summary, entries, last)


def strokes_markdown(result: SimEvaluation) -> str:
    return "\n".join([f"- {r.verdict(result.limits)}" for r in result.records] or ["no stroke ran"])


def plots_markdown(result: SimEvaluation, limit: int = 4) -> str:
    """The first strokes' top-down plots: the planned needle path and the one drawn in simulation, per arm, in mm."""
    images = []
    for r in result.records[:limit]:
        if r.plot and Path(r.plot).is_file():
            data = base64.b64encode(Path(r.plot).read_bytes()).decode()
            images.append(f"![stroke {r.episode}](data:image/png;base64,{data})")
    return "\n\n".join(images) or "no plot (no stroke ran a step)"


sim_job = dg.define_asset_job(
    "simulate_policy", selection=[sim_evaluation],
    description="Roll the newest open-loop-evaluated checkpoint out on the simulated arms and decide promotion "
    "(automation does it by itself after every passing policy_evaluation).")

defs = dg.Definitions(assets=[sim_evaluation], jobs=[sim_job])
