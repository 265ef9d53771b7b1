"""`training_splits` materialized through Dagster on synthetic recordings with bad episodes."""

from __future__ import annotations

import json

import dagster as dg

from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.splits import training_splits
from tatbot_pipeline.recordings.validation_report import Status
from tests.datasets.reports import rec_name, write_report


def materialize(settings, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [training_splits],
        resources={"pipeline": PipelineResource(recordings_dir=str(settings.recordings_dir), home=str(settings.home))},
        run_config={"ops": {"training_splits": {"config": run_config or {}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_training_splits_builds_train_and_val_from_usable_episodes(settings, recording_copy):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    a, b, bad = (recording_copy(rec_name(i)) for i in (1, 2, 3))
    write_report(settings, a, excluded={1: "arm disconnected (sleep pose)", 2: "black frame"},
                 summary={"design_name": "flower"})
    write_report(settings, b, summary={"design_name": "snail"})
    write_report(settings, bad, status=Status.FAIL)

    result = materialize(settings, {"val_fraction": 0.3, "salt": "dagster"})
    assert result.success
    md = result.asset_materializations_for_node("training_splits")[0].metadata
    assert md["train_episodes"].value + md["val_episodes"].value == 6  # 2 + 4 usable
    assert md["train_frames"].value == 8 * md["train_episodes"].value
    assert md["stroke_length_frames"].value == 8 and md["fps"].value == 10
    assert md["recordings"].value == [a.name, b.name]
    assert md["designs"].value == ["flower", "snail"]
    assert md["fingerprints"].value == {a.name: f"fp-{a.name}", b.name: f"fp-{b.name}"}
    table = md["excluded"].value
    assert f"| {a.name} | 1 | sleep_pose: arm disconnected (sleep pose) |" in table
    assert f"| {a.name} | 2 | sleep_pose: black frame |" in table and f"| {bad.name} | all |" in table
    assert md["reused"].value is False

    latest = settings.splits_dir / "latest"
    for side in ("train", "val"):
        assert md[f"{side}_path"].value == str(settings.splits_dir / md["version"].value / side)
        ds = LeRobotDataset("local/x", root=latest / side, video_backend="pyav")
        assert ds.num_episodes == md[f"{side}_episodes"].value
    manifest = json.loads((latest / "split.json").read_text())
    lineage = manifest["sides"]["train"]["lineage"] + manifest["sides"]["val"]["lineage"]
    assert sorted(map(tuple, lineage)) == sorted([(a.name, 0), (a.name, 3)] + [(b.name, e) for e in range(4)])

    again = materialize(settings, {"val_fraction": 0.3, "salt": "dagster"})
    md2 = again.asset_materializations_for_node("training_splits")[0].metadata
    assert md2["reused"].value is True and md2["version"].value == md["version"].value


def test_holdout_design_keeps_each_design_on_one_side(settings, recording_copy):
    for i, design in enumerate(["flower", "snail", "zorya", "flower", "snail", "zorya"]):
        write_report(settings, recording_copy(rec_name(i)), summary={"design_name": design})
    result = materialize(settings, {"holdout": "design", "val_fraction": 0.34, "salt": "d"})
    assert result.success
    manifest = json.loads((settings.splits_dir / "latest" / "split.json").read_text())
    design = {r["name"]: r["design"] for r in manifest["recordings"]}
    train = {design[n] for n in manifest["assignment"]["train"]}
    val = {design[n] for n in manifest["assignment"]["val"]}
    assert train and val and not train & val


def test_mixed_stroke_lengths_fail_the_run_with_the_reason(settings, recording_copy):
    write_report(settings, recording_copy(rec_name(1)))
    write_report(settings, recording_copy(rec_name(2)), summary={"stroke_length": 64})
    result = materialize(settings)
    assert not result.success
    error = result.failure_data_for_node("training_splits").error.cause  # the ValueError the asset raised
    assert error.cls_name == "ValueError"
    assert "disagree on stroke_length (stroke_length=64" in error.message and "group_key" in error.message


def test_an_unavailable_recordings_root_never_builds_a_smaller_split(settings, recording_copy):
    import shutil

    a, b = (recording_copy(rec_name(i)) for i in (1, 2))
    for rec in (a, b):
        write_report(settings, rec)
    first = materialize(settings).asset_materializations_for_node("training_splits")[0].metadata["version"].value

    for rec in (a, b):  # the mount point is still there, its contents are not (NFS gone)
        shutil.rmtree(rec)
    emptied = materialize(settings)
    assert not emptied.success
    error = emptied.failure_data_for_node("training_splits").error.cause
    assert error.cls_name == "RecordingsRootError" and "is empty but validation reports exist" in error.message

    settings.recordings_dir.rmdir()
    gone = materialize(settings).failure_data_for_node("training_splits").error.cause
    assert "recordings root unavailable" in gone.message
    assert (settings.splits_dir / "LATEST").read_text().strip() == first  # the previous split stays in place
