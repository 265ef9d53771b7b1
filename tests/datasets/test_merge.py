"""Merged train/val datasets: exactly the usable episodes, frames equal to the recordings, correct bookkeeping."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tatbot_pipeline.datasets.build import build_splits, resolve_latest
from tatbot_pipeline.datasets.merge import EpisodeSource, check_merged, write_merged_dataset
from tatbot_pipeline.datasets.split import SplitConfig
from tatbot_pipeline.recordings.validation_report import Status
from tests.datasets.frames import assert_frames_from_sources, load
from tests.datasets.reports import rec_name, write_report

CONFIG = SplitConfig(val_fraction=0.4, salt="test")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def validated(settings, recording_copy):
    """Two usable recordings (one with episode 2 excluded) and one failed recording."""
    a = recording_copy(rec_name(1))
    b = recording_copy(rec_name(2))
    bad = recording_copy(rec_name(3))
    write_report(settings, a, excluded={2: "arm reports the sleep pose"})
    write_report(settings, b)
    write_report(settings, bad, status=Status.FAIL)
    return {"a": a, "b": b, "bad": bad}


def test_split_holds_exactly_the_usable_episodes_with_frames_equal_to_the_source(settings, validated):
    before = tree_digest(settings.recordings_dir)
    result = build_splits(settings, CONFIG)
    assert tree_digest(settings.recordings_dir) == before  # recordings are never written

    sources = {p.name: load(p) for p in (validated["a"], validated["b"])}
    seen = []
    for side in ("train", "val"):
        ds = load(result.root / side)
        lineage = result.manifest["sides"][side]["lineage"]
        assert ds.num_episodes == len(lineage) and ds.num_frames == 8 * len(lineage)
        assert ds.meta.video_keys  # decoded video frames are compared too
        assert_frames_from_sources(ds, lineage, sources)
        seen += [tuple(x) for x in lineage]
    a, b = validated["a"].name, validated["b"].name
    assert sorted(seen) == sorted([(a, 0), (a, 1), (a, 3)] + [(b, ep) for ep in range(4)])
    assert result.manifest["excluded"] == {a: {"2": ["sleep_pose: arm reports the sleep pose"]}}
    assert result.manifest["skipped"] == {validated["bad"].name: "validation status fail"}
    assert result.manifest["stroke_length"] == 8


def test_stats_match_a_recomputation_from_the_merged_frames(settings, validated):
    result = build_splits(settings, CONFIG)
    root = result.root / "train"
    data = pd.concat(pd.read_parquet(f) for f in sorted((root / "data").rglob("*.parquet")))
    stats = json.loads((root / "meta" / "stats.json").read_text())
    for key in ("action", "observation.state", "index", "episode_index", "task_index", "frame_index", "timestamp"):
        values = np.stack(data[key].to_numpy()).astype(np.float64)
        values = values.reshape(len(data), -1)
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), rtol=1e-5, atol=1e-6, err_msg=key)
        # lerobot's running sums are float32: a constant gripper column comes out with std ~2e-5
        np.testing.assert_allclose(stats[key]["std"], values.std(0), rtol=1e-4, atol=1e-4, err_msg=key)
        np.testing.assert_allclose(stats[key]["min"], values.min(0), rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(stats[key]["max"], values.max(0), rtol=1e-6, err_msg=key)
        assert stats[key]["count"] == [len(data)]
    assert list(data["index"]) == list(range(len(data)))
    # video stats: the frame-count-weighted mean of the source episodes' image means
    episodes = pd.read_parquet(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    lineage = result.manifest["sides"]["train"]["lineage"]
    key = "observation.images.realsense1"
    means, counts = [], []
    for name, ep in lineage:
        src_eps = pq.read_table(settings.recordings_dir / name / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        means.append(np.array(src_eps[ep][f"stats/{key}/mean"], dtype=float).reshape(3))
        counts.append(src_eps[ep][f"stats/{key}/count"][0])
    expected = np.average(means, axis=0, weights=counts)
    np.testing.assert_allclose(np.array(stats[key]["mean"]).reshape(3), expected, rtol=1e-6)
    # per-episode index stats follow the new indices
    for _, row in episodes.iterrows():
        assert row["stats/index/min"][0] == row["dataset_from_index"]
        assert row["stats/index/max"][0] == row["dataset_to_index"] - 1
        assert row["stats/episode_index/mean"][0] == row["episode_index"]
    assert check_merged(root) == []


def test_same_inputs_reuse_the_version_and_a_new_recording_keeps_the_old_assignment(settings, validated,
                                                                                   recording_copy):
    first = build_splits(settings, CONFIG)
    again = build_splits(settings, CONFIG)
    assert again.reused and again.version == first.version
    assert resolve_latest(settings.splits_dir) == first.root
    assert (settings.splits_dir / "latest").resolve() == first.root.resolve()
    # a new recording: new version, but every old episode stays where it was
    write_report(settings, recording_copy(rec_name(4)))
    second = build_splits(settings, CONFIG)
    assert second.version != first.version and not second.reused
    assert resolve_latest(settings.splits_dir) == second.root and first.root.exists()
    assert (settings.splits_dir / "latest" / "train" / "meta" / "info.json").exists()
    for side in ("train", "val"):
        for name, eps in first.manifest["assignment"][side].items():
            assert second.manifest["assignment"][side][name] == eps
    # a changed fingerprint (recording re-validated after a change) also makes a new version
    write_report(settings, settings.recordings_dir / rec_name(4), excluded={0: "black frame"})
    assert build_splits(settings, CONFIG).version not in (first.version, second.version)


def test_val_and_train_share_one_copy_of_each_video(settings, validated):
    result = build_splits(settings, CONFIG)
    train_video = result.root / "train/videos/observation.images.realsense1/chunk-000/file-000.mp4"
    val_video = result.root / "val/videos/observation.images.realsense1/chunk-000/file-000.mp4"
    source = validated["a"] / "videos/observation.images.realsense1/chunk-000/file-000.mp4"
    assert train_video.read_bytes() == source.read_bytes()
    assert train_video.stat().st_ino == val_video.stat().st_ino  # hard link, not a second copy
    assert not any(p.is_relative_to(settings.recordings_dir) for p in result.root.rglob("*"))


def test_check_merged_flags_the_known_gap_of_lerobot_aggregate(settings, validated, tmp_path):
    """`aggregate_datasets` (lerobot 0.4.4, still in 0.6.1) keeps the source index stats: check_merged refuses such a dataset."""
    from lerobot.datasets.aggregate import aggregate_datasets

    out = tmp_path / "aggregated"
    aggregate_datasets(["a", "b"], "local/agg", roots=[validated["a"], validated["b"]], aggr_root=out)
    problems = check_merged(out)
    assert any("stats.json index min/max" in p for p in problems), problems


def test_check_merged_finds_rows_outside_the_named_data_file(settings, validated, tmp_path):
    merged = write_merged_dataset([EpisodeSource("a", validated["a"], (0, 1))], tmp_path / "m")
    assert merged.episodes == 2 and merged.frames == 16
    path = tmp_path / "m/meta/episodes/chunk-000/file-000.parquet"
    df = pd.read_parquet(path)
    df.loc[1, "dataset_from_index"] += 1
    df.to_parquet(path)
    assert any("do not match its index range" in p for p in check_merged(tmp_path / "m"))
    with pytest.raises(FileExistsError, match="already exists"):
        write_merged_dataset([EpisodeSource("a", validated["a"], (0,))], tmp_path / "m")


def test_mixed_stroke_lengths_are_refused_with_a_clear_message(settings, validated, recording_copy):
    odd = recording_copy(rec_name(5))
    write_report(settings, odd, summary={"stroke_length": 16})
    with pytest.raises(ValueError, match=f"disagree on stroke_length.*{odd.name}"):
        build_splits(settings, CONFIG)
    assert not settings.splits_dir.exists() or not any(settings.splits_dir.iterdir())  # nothing half-written
    grouped = build_splits(settings, SplitConfig(val_fraction=0.4, salt="test", group_key="stroke_length"))
    assert odd.name in grouped.manifest["skipped"]
    assert odd.name not in grouped.manifest["assignment"]["train"] | grouped.manifest["assignment"]["val"]


def test_done_when_real_validation_with_bad_episodes_gives_loadable_splits_of_exactly_the_usable_episodes(
        settings, recording_copy):
    """The issue's acceptance: recordings judged by the real `validate_recording`, then split."""
    from tatbot_pipeline.recordings.validate import validate_recording

    flaky, clean, broken = (recording_copy(rec_name(i)) for i in (1, 2, 3))
    with open(flaky / "logs/episode_000000.txt", "a") as f:
        f.write("2025y-08m-09d-17h-02m-11s|tools.stroke|WARNING| ⚠️ Robot is not connected. Reconnecting...\n")
    (broken / "strokebatch.safetensors").unlink()
    for rec in (flaky, clean, broken):
        validate_recording(rec, settle_seconds=0).save(settings.report_path(rec.name))

    result = build_splits(settings, CONFIG)
    got = []
    for side in ("train", "val"):
        ds = load(resolve_latest(settings.splits_dir) / side)
        lineage = result.manifest["sides"][side]["lineage"]
        assert ds.num_episodes == len(lineage)
        got += [tuple(x) for x in lineage]
    assert sorted(got) == sorted([(flaky.name, e) for e in (1, 2, 3)] + [(clean.name, e) for e in range(4)])
    assert list(result.manifest["excluded"][flaky.name]) == ["0"]
    assert result.manifest["skipped"][broken.name].startswith("validation status fail: ")


def test_val_fraction_zero_writes_only_train(settings, validated):
    result = build_splits(settings, SplitConfig(val_fraction=0.0))
    assert result.manifest["sides"]["val"] is None and not (result.root / "val").exists()
    assert result.side_path("val") is None
    assert load(result.side_path("train")).num_episodes == 7


def test_many_files_and_chunks_map_every_episode_to_its_rows_and_frames(settings, recording_copy, tmp_path):
    """Force a new data file per source and two files per chunk: the chunk/file bookkeeping must follow."""
    a, b, c = (recording_copy(rec_name(i)) for i in (1, 2, 3))
    info = json.loads((a / "meta/info.json").read_text())
    info.update(data_files_size_in_mb=1e-6, chunks_size=2)  # a copy, never the pristine recording
    (a / "meta/info.json").write_text(json.dumps(info))
    sources = [EpisodeSource("a", a, (1, 3)), EpisodeSource("b", b, (0,)), EpisodeSource("c", c, (2, 3))]
    merged = write_merged_dataset(sources, tmp_path / "m")
    root = tmp_path / "m"
    assert sorted(str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet", "data/chunk-001/file-000.parquet"]
    assert (root / "videos/observation.images.realsense2/chunk-001/file-000.mp4").exists()
    assert_frames_from_sources(load(root), merged.lineage, {"a": load(a), "b": load(b), "c": load(c)})
    assert merged.lineage == [("a", 1), ("a", 3), ("b", 0), ("c", 2), ("c", 3)]


def test_a_pipeline_home_inside_the_recordings_root_is_refused(settings, validated):
    from tatbot_pipeline.config import PipelineSettings

    inside = PipelineSettings(recordings_dir=settings.recordings_dir, home=settings.recordings_dir / ".tatbot")
    shutil.copytree(settings.validation_dir, inside.validation_dir)
    with pytest.raises(ValueError, match="under the recordings root.*TATBOT_PIPELINE_HOME"):
        build_splits(inside, CONFIG)
    assert not inside.splits_dir.exists()
