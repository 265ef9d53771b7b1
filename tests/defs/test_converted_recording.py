"""A v2.1 partition through the real assets: validated through its converted copy, and the split reads the copy."""

from __future__ import annotations

import dagster as dg

from tatbot_pipeline.datasets.build import build_splits
from tatbot_pipeline.datasets.split import SplitConfig
from tatbot_pipeline.defs.ingestion import recording_validation, stroke_recording
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.recordings.validation_report import ValidationReport


def test_v21_partition_is_converted_and_its_copy_split(recording_copy, pristine_v21, pristine_recording_nocams, settings):
    v21 = recording_copy(source=pristine_v21)
    v30 = recording_copy(source=pristine_recording_nocams)  # no cameras either, so the two may share a split
    resource = PipelineResource(recordings_dir=str(settings.recordings_dir), home=str(settings.home), settle_seconds=0.0)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("recordings", [v21.name, v30.name])
        result = dg.materialize([stroke_recording, recording_validation], partition_key=v21.name,
                                resources={"pipeline": resource}, instance=instance)
        assert result.success
        metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
        validation = metadata["recording_validation"]
        assert validation["status"].value == "pass"
        assert validation["original"].value == str(v21)
        assert validation["converted_copy"].value == str(settings.converted_dir / v21.name)
        assert metadata["stroke_recording"]["codebase_version"].value == "v2.1"  # the recording as the robot left it
        dg.materialize([stroke_recording, recording_validation], partition_key=v30.name,
                       resources={"pipeline": resource}, instance=instance)
    report = ValidationReport.load(settings.report_path(v21.name))
    split = build_splits(settings, SplitConfig(val_fraction=0.25))
    paths = {r["name"]: r["path"] for r in split.manifest["recordings"]}
    assert paths[v21.name] == report.path == str(settings.converted_dir / v21.name)
    assert paths[v30.name] == str(v30)
