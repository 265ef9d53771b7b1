"""The loop's automation conditions on the real definitions, tick by tick (`dg.evaluate_automation_conditions`).

Every upstream event comes from materializing the real assets on real synthetic recordings (ingestion, split,
a tiny training run); only the clock is chosen, so that cron ticks fall where the test wants them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.definitions import build_definitions
from tatbot_pipeline.defs.evaluation import policy_evaluation
from tatbot_pipeline.defs.ingestion import recording_validation, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.splits import training_splits
from tatbot_pipeline.defs.training import trained_policy

# What the code location loads (definitions.defs), from this process's settings.
SETTINGS = PipelineSettings.from_env()
defs = build_definitions(SETTINGS)
SPLIT_CRON, RETRAIN_CRON = SETTINGS.split_cron, SETTINGS.retrain_cron

LOOP = ("training_splits", "trained_policy", "policy_evaluation", "sim_evaluation")
OPEN = {"max_mae": 1e9, "max_joint_mae": 1e9, "latency_budget_ms": 1e9, "max_episodes": 1}  # an open-loop pass
NAMES = ["stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s", "stroke-flower-2025y-08m-10d-09h-00m-00s"]


def next_tick(cron: str, after: datetime) -> datetime:
    """The first tick of `cron` strictly after `after` (UTC)."""
    return next(cron_string_iterator(after.timestamp() + 1, cron, "UTC"))


class Loop:
    """A Dagster instance, the real definitions and a clock in the future (events happen now, ticks later)."""

    SENSORS = ("loop_automation", "training_automation")

    def __init__(self, instance: dg.DagsterInstance, resource: PipelineResource) -> None:
        self.instance, self.resource = instance, resource
        self.cursors: dict[str, object] = {}
        # Two days ahead (after every real event), at 12:00:05 UTC: just past a split tick and far from the nightly
        # retrain tick, so the 10-s steps of a plain `tick()` never cross a cron tick by chance (they did ~8 % of
        # runs from an arbitrary start); tests cross ticks on purpose with `until`.
        day = (datetime.now(timezone.utc) + timedelta(days=2)).date()
        self.now = datetime(day.year, day.month, day.day, 12, 0, 5, tzinfo=timezone.utc)

    def tick(self, at: datetime | None = None) -> dict[str, int]:
        """One tick of each automation sensor, each over its own targets with its own cursor, as the daemon does."""
        self.now = at or self.now + timedelta(seconds=10)
        requested = {}
        for sensor in self.SENSORS:
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=self.instance, asset_selection=defs.get_sensor_def(sensor).asset_selection,
                evaluation_time=self.now, cursor=self.cursors.get(sensor))
            self.cursors[sensor] = result.cursor
            requested.update({k.to_user_string(): n for k in map(dg.AssetKey, LOOP)
                              if (n := result.get_num_requested(k))})
        return requested

    def ingest(self, *names: str) -> list[bool]:
        self.instance.add_dynamic_partitions("recordings", list(names))
        return [dg.materialize([stroke_recording, recording_validation], partition_key=name, instance=self.instance,
                               resources={"pipeline": self.resource}, raise_on_error=False).success for name in names]

    def materialize(self, asset, config: dict | None = None) -> dg.ExecuteInProcessResult:
        run_config = {"ops": {asset.op.name: {"config": config}}} if config else {}
        return dg.materialize([asset], instance=self.instance, resources={"pipeline": self.resource},
                              run_config=run_config)

    def until(self, cron: str, offset_s: float = 20) -> datetime:
        """`offset_s` seconds past the next tick of `cron`."""
        return next_tick(cron, self.now) + timedelta(seconds=offset_s)


@pytest.fixture
def loop(recording_copy, recordings_root: Path, tmp_path: Path):
    for name in NAMES:
        recording_copy(name)
    resource = PipelineResource(recordings_dir=str(recordings_root), home=str(tmp_path / "home"), settle_seconds=0)
    with dg.instance_for_test() as instance:
        yield Loop(instance, resource)


def test_the_loop_closes_tick_by_tick(loop: Loop, recordings_root: Path):
    split_tick = next_tick(SPLIT_CRON, loop.now)
    assert loop.tick(split_tick - timedelta(seconds=50)) == {}  # first evaluation: nothing has happened

    assert loop.ingest(*NAMES) == [True, True]  # a burst of two validated recordings
    assert loop.tick(split_tick - timedelta(seconds=30)) == {}, "no rebuild before the split tick (debounce)"
    assert loop.tick(split_tick + timedelta(seconds=10)) == {"training_splits": 1}
    assert loop.tick() == {}, "requested once, not again while it runs"

    split = loop.materialize(training_splits)  # what the daemon's run does
    version = split.asset_materializations_for_node("training_splits")[0].metadata["version"].value
    assert loop.tick() == {}, "training waits for its own cron tick"
    assert loop.tick(loop.until(RETRAIN_CRON)) == {"trained_policy": 1}
    assert loop.tick() == {}

    # 2 steps log too few points for `loss_decreased`, a blocking check: that checkpoint is not evaluated.
    sick = dg.materialize([trained_policy], instance=loop.instance, resources={"pipeline": loop.resource},
                          run_config={"ops": {"trained_policy": {"config": {"preset": "tiny_smolvla", "steps": 2}}}},
                          raise_on_error=False)
    assert not sick.success
    assert loop.tick() == {}, "a checkpoint whose blocking checks failed is never evaluated"
    new = sick.asset_materializations_for_node("trained_policy")[0].metadata
    split_meta = split.asset_materializations_for_node("training_splits")[0].metadata
    assert new["new_recordings"].value == sorted(NAMES)
    assert new["new_episodes"].value == split_meta["train_episodes"].value + split_meta["val_episodes"].value
    assert new["new_data"].value.startswith("first checkpoint")

    # The preset's own 20 steps: lerobot 0.6.1's SmolVLA loss averages only the unpadded actions, so with chunks as
    # long as the strokes a 12-step curve is mostly batch-to-batch padding noise (it rose here: 2.10 -> 2.11).
    trained = loop.materialize(trained_policy, {"preset": "tiny_smolvla", "steps": 20})
    assert all(c.passed for c in trained.get_asset_check_evaluations())
    again = trained.asset_materializations_for_node("trained_policy")[0].metadata
    assert again["new_episodes"].value == 0 and again["new_recordings"].value == []  # same split as the last one
    assert loop.tick() == {"policy_evaluation": 1}
    assert loop.tick() == {}

    # The open-loop gate fails: nothing is simulated. It passes: the simulation follows by itself (no operator, nothing
    # real moves), and it is what promotes.
    loop.materialize(policy_evaluation, {**OPEN, "max_mae": 0.0})
    assert loop.tick() == {}, "a checkpoint that failed the open-loop gate is never simulated"
    loop.materialize(policy_evaluation, OPEN)
    assert loop.tick() == {"sim_evaluation": 1}
    assert loop.tick() == {}

    # Nothing new: a whole day of split and retrain ticks requests nothing.
    for _ in range(3):
        assert loop.tick(loop.until(SPLIT_CRON)) == {}
    assert loop.tick(loop.until(RETRAIN_CRON)) == {}
    assert (Path(loop.resource.home) / "splits" / version / "split.json").is_file()


def test_a_failed_recording_rebuilds_at_most_once_and_never_retrains(loop: Loop, recording_copy):
    loop.tick()
    loop.ingest(*NAMES)
    assert loop.tick() == {}  # seen landing; the split waits for the next split tick
    assert loop.tick(loop.until(SPLIT_CRON)) == {"training_splits": 1}
    first = loop.materialize(training_splits).asset_materializations_for_node("training_splits")[0].metadata
    assert loop.tick(loop.until(RETRAIN_CRON)) == {"trained_policy": 1}  # the request is what resets "changed"

    broken = recording_copy("stroke-zorya-2025y-08m-11d-09h-00m-00s")
    (broken / "strokebatch.safetensors").unlink()
    assert loop.ingest(broken.name) == [True]  # a FAIL verdict: the report lands, its ERROR check fails
    assert loop.tick() == {}
    requested = [loop.tick(loop.until(SPLIT_CRON)) for _ in range(5)]
    assert [r.get("training_splits", 0) for r in requested].count(1) <= 1, requested
    assert not any(r.get("trained_policy") or r.get("policy_evaluation") for r in requested), requested

    again = loop.materialize(training_splits).asset_materializations_for_node("training_splits")[0].metadata
    assert again["reused"].value and again["version"].value == first["version"].value
    assert broken.name in again["excluded"].value  # skipped, and says why
    assert loop.tick(loop.until(RETRAIN_CRON)) == {}, "same version: nothing to retrain"
    assert loop.tick(loop.until(SPLIT_CRON)) == {}, "no storm: nothing new since the last build"


def test_the_split_waits_while_ingestion_is_in_flight(loop: Loop, recording_copy):
    loop.tick()
    loop.ingest(NAMES[0])
    # A second recording's ingestion run exists (the sensor requested it) but has not finished.
    job = defs.resolve_implicit_job_def_def_for_assets([dg.AssetKey("recording_validation")])
    queued = loop.instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": NAMES[1]},
        asset_selection=frozenset({dg.AssetKey("stroke_recording"), dg.AssetKey("recording_validation")}))
    loop.instance.add_dynamic_partitions("recordings", [NAMES[1]])
    for _ in range(3):
        assert loop.tick(loop.until(SPLIT_CRON)) == {}, "a validation of this burst is still in flight"
    loop.instance.report_run_canceled(queued)
    loop.ingest(NAMES[1])
    assert loop.tick() == {}
    assert loop.tick(loop.until(SPLIT_CRON)) == {"training_splits": 1}


def test_the_loop_is_on_without_a_click_and_rollouts_stay_manual():
    for name in ("recordings_sensor", "loop_automation", "training_automation"):
        assert defs.get_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING, name
    graph = defs.resolve_asset_graph()
    conditions = {key.to_user_string(): graph.get(key).automation_condition for key in graph.get_all_asset_keys()}
    assert {k for k, c in conditions.items() if c is not None} == set(LOOP)
    assert conditions["trained_policy"].get_label() == "Retrain on a new split (cron)"
    repo = defs.get_repository_def()
    assert not repo.schedule_defs  # nothing launches robot_eval (or anything else) on a timer
    assert all(t.job_name != "robot_eval" for s in repo.sensor_defs for t in s.targets)
