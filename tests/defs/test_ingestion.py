"""The Dagster skin of ingestion: sensor decisions, per-recording assets, blocking checks, a read-only root."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import dagster as dg

from tatbot_pipeline.defs.ingestion import (
    recording_validation,
    recordings_partitions,
    recordings_sensor,
    stroke_recording,
)
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.recordings.validation_report import Status, ValidationReport
from tatbot_pipeline.recordings.scan import PER_TICK
from tests.conftest import age_tree, as_never_connected



def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir", p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _resource(recordings_root: Path, home: Path, settle: float = 60.0) -> PipelineResource:
    return PipelineResource(recordings_dir=str(recordings_root), home=str(home), settle_seconds=settle)


def _tick(resources: dict, instance, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    return recordings_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))


def _apply(instance, result: dg.SensorResult) -> None:
    """What the daemon does with the partition requests (build_sensor_context does not apply them)."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


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
        result = _tick(resources, instance)
        assert sorted(r.partition_key for r in result.run_requests) == sorted([a.name, b.name])
        assert all(r.job_name == "ingest_recordings" for r in result.run_requests)
        [add] = result.dynamic_partitions_requests
        assert add.partitions_def_name == "recordings" and sorted(add.partition_keys) == sorted([a.name, b.name])

        # The daemon would apply the request; do it by hand, then tick again with the cursor: nothing new.
        _apply(instance, result)
        again = _tick(resources, instance, result.cursor)
        assert isinstance(again, dg.SkipReason) and "0 new, 1 settling" in again.skip_message

        # A changed recording is requested again (new run key), without re-adding its partition.
        with open(a / "logs" / "episode_000000.txt", "a") as f:
            f.write("late line\n")
        age_tree(a, 3600)
        changed = _tick(resources, instance, result.cursor)
        assert [r.partition_key for r in changed.run_requests] == [a.name]
        assert changed.run_requests[0].run_key != next(r.run_key for r in result.run_requests if r.partition_key == a.name)
        assert changed.dynamic_partitions_requests == []


def _stub_recordings(root: Path, n: int) -> list[str]:
    """Dirs with only what the sensor stats (it never opens a file), untouched for an hour."""
    names = []
    for i in range(n):
        d = root / f"stroke-bench-2025y-01m-01d-{i // 3600:02d}h-{i // 60 % 60:02d}m-{i % 60:02d}s"
        (d / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        (d / "logs").mkdir()
        (d / "meta" / "info.json").touch()
        age_tree(d, 3600)
        names.append(d.name)
    return names


def test_a_backlog_goes_in_chunks_with_a_small_cursor(recordings_root: Path, tmp_path: Path):
    names = _stub_recordings(recordings_root, 2 * PER_TICK + 50)  # the production batch size, not a patched one
    with dg.instance_for_test() as instance:
        resources = {"pipeline": _resource(recordings_root, tmp_path / "home")}
        requested, cursor = [], None
        for _ in range(3):
            result = _tick(resources, instance, cursor)
            [add] = result.dynamic_partitions_requests  # this tick's new partitions, in one request
            assert sorted(add.partition_keys) == sorted(r.partition_key for r in result.run_requests)
            assert len(result.cursor) < 40, result.cursor  # a version, not the seen-map
            requested.append(len(result.run_requests))
            _apply(instance, result)
            cursor = result.cursor
        assert requested == [PER_TICK, PER_TICK, 50]
        assert sorted(instance.get_dynamic_partitions("recordings")) == names
        [seen_file] = (tmp_path / "home" / "ingestion").glob(f"seen-{cursor.split(':')[0]}-3.json")
        assert set(json.loads(seen_file.read_text())) == set(names)
        assert isinstance(_tick(resources, instance, cursor), dg.SkipReason)


def test_a_lost_tick_is_decided_again_and_an_old_cursor_is_taken_over(recordings_root: Path, tmp_path: Path):
    names = _stub_recordings(recordings_root, 3)
    with dg.instance_for_test() as instance:
        resources = {"pipeline": _resource(recordings_root, tmp_path / "home")}
        first = _tick(resources, instance)
        second = _tick(resources, instance, first.cursor)
        assert isinstance(second, dg.SkipReason)
        # The daemon lost the tick after `first` was decided: ticking from the older cursor decides it again.
        (recordings_root / names[0] / "logs" / "episode_000000.txt").touch()
        age_tree(recordings_root / names[0], 3600)
        newer = _tick(resources, instance, first.cursor)
        lost_again = _tick(resources, instance, first.cursor)
        assert [r.run_key for r in newer.run_requests] == [r.run_key for r in lost_again.run_requests] != []

        # A cursor written by the previous version of the sensor (the whole map) is taken over: nothing re-ingested.
        old_cursor = json.dumps({r.partition_key: r.run_key.split(":")[1] for r in first.run_requests})
        taken_over = _tick(resources, instance, old_cursor)
        assert [r.partition_key for r in taken_over.run_requests] == [names[0]]  # only the one that changed since
        assert len(taken_over.cursor) < 40


def test_a_missing_unreadable_or_emptied_root_skips_the_tick_with_one_line(recording_copy, recordings_root: Path,
                                                                           tmp_path: Path):
    a = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    age_tree(a, 3600)
    home = tmp_path / "home"
    with dg.instance_for_test() as instance:
        gone = {"pipeline": _resource(tmp_path / "nfs-not-mounted", home)}
        skipped = _tick(gone, instance)
        assert isinstance(skipped, dg.SkipReason) and "\n" not in skipped.skip_message
        assert re.match(r"RECORDINGS ROOT UNUSABLE: .*not found .*nothing treated as removed", skipped.skip_message)
        (tmp_path / "a-file").write_text("")
        assert "not a directory" in _tick({"pipeline": _resource(tmp_path / "a-file", home)}, instance).skip_message

        resources = {"pipeline": _resource(recordings_root, home)}
        result = _tick(resources, instance)
        _apply(instance, result)
        shutil.rmtree(a)  # the mount point is still there, its contents are not
        emptied = _tick(resources, instance, result.cursor)
        assert "empty, but 1 recordings were ingested" in emptied.skip_message
        assert instance.get_dynamic_partitions("recordings") == [a.name]


def test_a_removed_recording_loses_its_partition_and_rebuilds_the_split(recording_copy, recordings_root: Path,
                                                                         tmp_path: Path):
    a = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    b = recording_copy("stroke-flower-2025y-08m-10d-09h-00m-00s")
    age_tree(a, 3600)
    age_tree(b, 3600)
    with dg.instance_for_test() as instance:
        resources = {"pipeline": _resource(recordings_root, tmp_path / "home")}
        first = _tick(resources, instance)
        _apply(instance, first)
        shutil.rmtree(b)
        removed = _tick(resources, instance, first.cursor)
        [delete] = removed.dynamic_partitions_requests
        assert isinstance(delete, dg.DeleteDynamicPartitionsRequest) and list(delete.partition_keys) == [b.name]
        [rebuild] = removed.run_requests
        assert rebuild.job_name == "build_splits" and rebuild.partition_key is None
        _apply(instance, removed)
        assert instance.get_dynamic_partitions("recordings") == [a.name]
        assert isinstance(_tick(resources, instance, removed.cursor), dg.SkipReason)


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


def test_materialize_reports_every_verdict_without_failing_the_run(recording_copy, recordings_root: Path, tmp_path: Path):
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
        assert list(rec_meta)[0] == "summary" and rec_meta["summary"].value.startswith("4 episodes, 32 frames at 10 fps")
        assert rec_meta["episodes"].value == 4 and rec_meta["stroke_length_frames"].value == 8
        assert rec_meta["cameras"].value == ["realsense1", "realsense2"]
        val_meta = mats["recording_validation"].materialization.metadata
        assert val_meta["summary"].value == "WARN 3/4 usable: ep 1 recorder error logged"
        assert val_meta["status"].value == "warn"
        assert val_meta["episodes_usable"].value == 3
        assert "not responsive" in val_meta["findings"].value
        assert val_meta["joint_ranges"].value.startswith("![joint ranges")

        checks = {e.check_name: e for e in results[good.name].get_asset_check_evaluations()}
        assert checks["recording_usable"].passed and not checks["all_episodes_usable"].passed

        # A failed recording is a verdict, not a crash: the report materializes, the run succeeds with no step
        # failure (no stack trace in the run log), the ERROR check fails naming the recording and the first reason,
        # and the materialization carries the verdict as a tag.
        assert results[bad.name].success
        assert not [e for e in results[bad.name].all_events if e.is_step_failure]
        [bad_mat] = [m.materialization for m in results[bad.name].get_asset_materialization_events()
                     if m.asset_key == dg.AssetKey("recording_validation")]
        assert bad_mat.metadata["summary"].value.startswith("FAIL 0/4 usable: strokebatch.safetensors missing")
        assert bad_mat.tags["tatbot/verdict"] == "fail" and mats["recording_validation"].materialization.tags[
            "tatbot/verdict"] == "warn"
        usable = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("recording_validation"), "recording_usable"), limit=10)
        by_partition = {r.partition: r for r in usable}
        assert by_partition[bad.name].status.value == "FAILED" and by_partition[good.name].status.value == "SUCCEEDED"
        assert by_partition[bad.name].evaluation.description.startswith(f"FAIL: {bad.name} — strokebatch.safetensors missing")
        warn = {r.partition: r for r in instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("recording_validation"), "all_episodes_usable"), limit=10)}
        assert warn[good.name].evaluation.severity == dg.AssetCheckSeverity.WARN and not warn[good.name].evaluation.passed
        assert warn[good.name].evaluation.description == f"WARN 3/4 usable: ep 1 recorder error logged ({good.name})"
        # The UI colours a failed evaluation by its severity: WARN yellow, an unusable recording red in both checks.
        assert warn[bad.name].evaluation.severity == dg.AssetCheckSeverity.ERROR and not warn[bad.name].evaluation.passed
        # Where the UI colours only materializations (the partitions tab), a badge in the checks' colours says it;
        # the run's tag says it in the Runs list.
        assert val_meta["verdict"].value.startswith("![WARN](data:image/svg+xml;base64,")
        assert 'fill="#FEA319"' in base64.b64decode(val_meta["verdict"].value.split(",")[1].split(")")[0]).decode()
        assert bad_mat.metadata["verdict"].value.startswith("![FAIL](") and "the split leaves it out" in \
            bad_mat.metadata["verdict"].value
        assert instance.get_run_by_id(results[bad.name].run_id).tags["tatbot/verdict"] == "FAIL 0/4"
        assert instance.get_run_by_id(results[good.name].run_id).tags["tatbot/verdict"] == "WARN 3/4"

        saved = ValidationReport.load(home / "validation" / f"{bad.name}.json")
        assert saved.status is Status.FAIL and saved.episodes_usable == []
        assert ValidationReport.load(home / "validation" / f"{good.name}.json").episodes_usable == [0, 2, 3]

    assert _tree_digest(recordings_root) == before, "the recordings root must stay byte-identical"


def test_a_session_with_nothing_recorded_is_empty_and_neither_fails_nor_enters_the_split(
        recording_copy, recordings_root: Path, tmp_path: Path):
    from tatbot_pipeline.datasets.selection import load_usable_recordings

    good = recording_copy("stroke-tatbotlogo-2025y-08m-09d-17h-02m-10s")
    empty = recording_copy("stroke-default-2025y-09m-20d-14h-31m-07s")
    as_never_connected(empty, tmp_path / "recorded")
    home = tmp_path / "home"
    with dg.instance_for_test() as instance:
        result = _materialize(recordings_root, home, [good.name, empty.name], instance)[empty.name]
        [validation] = [m.materialization for m in result.get_asset_materialization_events()
                        if m.asset_key == dg.AssetKey("recording_validation")]
        assert result.success and validation.metadata["status"].value == "empty"
        assert validation.metadata["summary"].value == \
            "EMPTY: no strokes recorded (no meta/) — the robot never connected?"
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {"recording_usable": True, "all_episodes_usable": True}
        assert instance.get_status_by_partition(dg.AssetKey("recording_validation"), [empty.name],
                                                recordings_partitions) == {empty.name: dg.AssetPartitionStatus.MATERIALIZED}
    selection = load_usable_recordings(home / "validation")
    assert [e.name for e in selection.recordings] == [good.name]
    assert empty.name not in selection.skipped


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
