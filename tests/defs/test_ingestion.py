"""The Dagster skin of ingestion: sensor decisions, per-recording assets, blocking checks, a read-only root."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from tatbot_pipeline.defs.ingestion import recording_validation, recordings_partitions, recordings_sensor, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.recordings.report import Status, ValidationReport
from tests.conftest import age_tree



def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _resource(recordings_root: Path, home: Path, settle: float = 60.0) -> PipelineResource:
    return PipelineResource(recordings_dir=str(recordings_root), home=str(home), settle_seconds=settle)


def test_sensor_adds_settled_recordings_and_skips_the_rest(recording_copy, recordings_root: Path, tmp_path: Path):
    a = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    b = recording_copy("stroke-flower-2025y-08m-10d-09h-00m-00s")
    fresh = recording_copy("stroke-zorya-2025y-08m-11d-09h-00m-00s")  # "still being written"
    (recordings_root / "not-a-recording").mkdir()
    (recordings_root / "stroke-bad-name").mkdir()
    age_tree(a, 3600)
    age_tree(b, 3600)
    os.utime(fresh / "meta" / "info.json")

    with dg.instance_for_test() as instance:
        resources = {"pipeline": _resource(recordings_root, tmp_path / "home")}
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        result = recordings_sensor(ctx)
        assert sorted(r.partition_key for r in result.run_requests) == sorted([a.name, b.name])
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == "recordings" and sorted(add.partition_keys) == sorted([a.name, b.name])
        assert set(json.loads(result.cursor)) == {a.name, b.name}

        # The daemon would apply the request; do it by hand, then tick again with the cursor: nothing new.
        instance.add_dynamic_partitions("recordings", [a.name, b.name])
        again = recordings_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor))
        assert again.run_requests == [] and again.dynamic_partitions_requests == []

        # A changed recording is requested again (new run key), without re-adding its partition.
        with open(a / "logs" / "episode_000000.txt", "a") as f:
            f.write("late line\n")
        age_tree(a, 3600)
        changed = recordings_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor))
        assert [r.partition_key for r in changed.run_requests] == [a.name]
        assert changed.run_requests[0].run_key != next(r.run_key for r in result.run_requests if r.partition_key == a.name)
        assert changed.dynamic_partitions_requests == []


def _materialize(recordings_root: Path, home: Path, names: list[str], instance) -> dict[str, dg.ExecuteInProcessResult]:
    instance.add_dynamic_partitions("recordings", names)
    return {
        name: dg.materialize(
            [stroke_recording, recording_validation],
            partition_key=name,
            resources={"pipeline": _resource(recordings_root, home, settle=0.0)},
            instance=instance,
            raise_on_error=False,
        )
        for name in names
    }


def test_materialize_reports_verdicts_and_gates_failed_recordings(recording_copy, recordings_root: Path, tmp_path: Path):
    good = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    bad = recording_copy("stroke-flower-2025y-08m-10d-09h-00m-00s")
    (bad / "strokebatch.safetensors").unlink()
    with open(good / "logs" / "episode_000001.txt", "a") as f:
        f.write("x|trossen|ERROR| ❌ left arm not responsive\n")
    before = _tree_digest(recordings_root)
    home = tmp_path / "home"

    with dg.instance_for_test() as instance:
        results = _materialize(recordings_root, home, [good.name, bad.name], instance)
        assert results[good.name].success

        mats = {m.asset_key.path[-1]: m for m in results[good.name].get_asset_materialization_events()}
        rec_meta = mats["stroke_recording"].materialization.metadata
        assert rec_meta["episodes"].value == 4 and rec_meta["stroke_length"].value == 8
        assert rec_meta["cameras"].value == ["realsense1", "realsense2"]
        val_meta = mats["recording_validation"].materialization.metadata
        assert val_meta["status"].value == "warn"
        assert val_meta["episodes_usable"].value == 3
        assert "not responsive" in val_meta["findings"].value
        assert val_meta["joint_ranges"].value.startswith("![joint ranges")

        checks = {e.check_name: e for e in results[good.name].get_asset_check_evaluations()}
        assert checks["recording_usable"].passed and not checks["all_episodes_usable"].passed

        bad_checks = {e.check_name: e for e in results[bad.name].get_asset_check_evaluations()}
        assert not bad_checks["recording_usable"].passed
        assert bad_checks["recording_usable"].severity == dg.AssetCheckSeverity.ERROR

        saved = ValidationReport.load(home / "validation" / f"{bad.name}.json")
        assert saved.status is Status.FAIL and saved.episodes_usable == []
        assert ValidationReport.load(home / "validation" / f"{good.name}.json").episodes_usable == [0, 2, 3]

    assert _tree_digest(recordings_root) == before, "the recordings root must stay byte-identical"


def test_metadata_never_carries_scene_secrets(recording_copy, recordings_root: Path, tmp_path: Path):
    rec = recording_copy()
    with dg.instance_for_test() as instance:
        result = _materialize(recordings_root, tmp_path / "home", [rec.name], instance)[rec.name]
        text = repr([m.materialization.metadata for m in result.get_asset_materialization_events()])
        text += "".join(entry.user_message or "" for entry in instance.all_logs(result.run_id))
    assert rec.name in text  # the logs were really read
    assert "tatbot-cam-pw-1" not in text and "192.168.1.91" not in text


def test_partitions_definition_name_is_stable():
    assert recordings_partitions.name == "recordings"
