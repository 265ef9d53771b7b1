"""The loop without a click: declarative automation conditions on the real assets, and the sensors that run them.

    recordings_sensor (defs/ingestion.py)      new or changed recording dirs -> stroke_recording + recording_validation
    training_splits     split_cron debounce    rebuilt after validations land, once nothing is being ingested
    trained_policy      retrain_cron (nightly) retrained at the first tick after the split's *version* changed
    policy_evaluation   after every new checkpoint whose blocking health checks passed (the open-loop gate)
    sim_evaluation      after every policy_evaluation whose open-loop gate passed (closed loop on simulated arms;
                        promotes the checkpoint when its sim gate passes too)
    robot_eval          never automatic: it moves hardware next to a person

Why the split has a cron of its own rather than a settle window: Dagster has no built-in "quiet for N seconds"
condition (a custom one runs only in the user code server and is a preview feature), and the sensor already requests
a whole burst in one tick, so "nothing is being ingested" catches a burst; the cron only bounds how often a trickle
of recordings rebuilds the split (each rebuild copies every video). A validation that lands just before a split
tick but is first seen in the evaluation after it still counts (conditions compare the event's timestamp).

A failed recording still materializes `recording_validation`, so it may rebuild the split once; the split skips it
(it reads the reports), keeps its version, and the unchanged data version does not count as a change for training.
"""

from __future__ import annotations

import dagster as dg

from tatbot_pipeline.config import PipelineSettings

AC = dg.AutomationCondition


def _started() -> dg.AutomationCondition:
    """Requested by automation, or started any other way (a click, a job, a re-execution)."""
    return (AC.newly_requested() | AC.in_progress().newly_true()).with_label("it was last requested or started")


def _idle(what: str) -> dg.AutomationCondition:
    return (~AC.in_progress()).with_label(f"{what} is not already running")


def split_condition(cron: str) -> dg.AutomationCondition:
    """Validations landed since the last build, a split tick has passed since the latest one, ingestion is idle."""
    # newly_updated carries the materialization's timestamp, so a validation that lands just before a tick which
    # is seen in the same evaluation still counts as "before the tick".
    landed = AC.any_deps_match(AC.newly_updated()).with_label("a recording validation landed")
    return (
        landed.since(_started()).with_label("recordings were validated (new, changed or re-run) since the last build")
        & AC.cron_tick_passed(cron).since(landed).with_label(f"a split tick ({cron}) has passed since the latest one")
        & (~AC.any_deps_in_progress()).with_label("no recording is being ingested")
        & _idle("the split")
    ).with_label("Rebuild after validations")  # short: the UI shows it in a 300 px chip; the parts say the rest


def retrain_condition(cron: str) -> dg.AutomationCondition:
    """The first cron tick after the split's version changed, once the split build and any training are done.

    The split's data version is its content hash, so a rebuild that reuses the same episodes changes nothing here.
    """
    changed = AC.any_deps_match(AC.data_version_changed()).with_label("the split's version changed")
    built = AC.any_deps_match(AC.newly_updated()).with_label("the split was built")  # timestamped, unlike `changed`
    return (
        changed.since(_started()).with_label("the split's version changed since training last started")
        & AC.cron_tick_passed(cron).since(built).with_label(f"a retraining tick ({cron}) has passed since then")
        & (~AC.any_deps_in_progress()).with_label("the split is not being rebuilt")
        & _idle("training")
    ).with_label("Retrain on a new split (cron)")


def evaluate_condition() -> dg.AutomationCondition:
    """Every new checkpoint whose blocking health checks passed, once its training run has finished.

    Only finished materializations count (no "will be requested"): training runs under its own sensor with the
    training run tags, so evaluation is always a run of its own that starts after the checks are in.
    """
    trained = AC.any_deps_match(AC.newly_updated()).with_label("a checkpoint was trained")
    healthy = AC.all_deps_match(AC.all_checks_match(AC.check_passed(), blocking_only=True))
    return (
        trained.since(_started()).with_label("a new checkpoint was trained since the last evaluation")
        & healthy.with_label("its blocking health checks passed")
        & (~AC.any_deps_in_progress()).with_label("no training is running")
        & _idle("an evaluation")
    ).with_label("Evaluate healthy checkpoints")


def sim_condition() -> dg.AutomationCondition:
    """After every policy_evaluation whose open-loop gate (its `promotion_gate` check) passed, once it finished: the
    simulator needs no operator and moves nothing real, so nobody has to click."""
    evaluated = AC.any_deps_match(AC.newly_updated()).with_label("a checkpoint was evaluated open-loop")
    passed = AC.all_deps_match(AC.all_checks_match(AC.check_passed(), blocking_only=False))
    return (
        evaluated.since(_started()).with_label("a new open-loop evaluation since the last simulation")
        & passed.with_label("its open-loop gate passed")
        & (~AC.any_deps_in_progress()).with_label("no evaluation is running")
        & _idle("a simulation")
    ).with_label("Simulate gated checkpoints")


def with_condition(assets: dg.AssetsDefinition, condition: dg.AutomationCondition) -> dg.AssetsDefinition:
    """The asset with this condition: the crons are settings, known when the code location loads, not at import."""
    return assets.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition))


def loop_sensor(settings: PipelineSettings) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "loop_automation",
        target=dg.AssetSelection.assets("training_splits", "policy_evaluation", "sim_evaluation"),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        # Sensor and job descriptions show as plain text (no markdown, unlike asset descriptions): no backticks.
        description=f"Rebuilds training_splits after new validations (at most once per {settings.split_cron}, "
        "never while recordings are being ingested), evaluates every new healthy checkpoint and simulates every one "
        "that passed the open-loop gate. Turn it off to pause the loop; training_automation retrains, robot_eval stays "
        "manual.",
    )


def build(settings: PipelineSettings) -> dg.Definitions:
    return dg.Definitions(sensors=[loop_sensor(settings)])
