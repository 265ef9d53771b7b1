"""One split over recordings of different eras: tatbot's fork (v3.0, list<double> columns), upstream lerobot 0.6.1
(fixed-size list<float> columns, quantile stats in meta/episodes) and a v2.1 recording converted by lerobot alone
(per-feature `fps` in info.json, a `condition` episodes column). Same features, stored differently."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tatbot_pipeline.datasets.build import build_splits
from tatbot_pipeline.lerobot_tables import read_info
from tatbot_pipeline.datasets.merge import EpisodeSource, write_merged_dataset
from tatbot_pipeline.datasets.split import SplitConfig
from tatbot_pipeline.synth import SynthSpec, make_recordings
from tests.conftest import SMALL
from tests.datasets.frames import assert_frames_from_sources, load
from tests.datasets.reports import write_report

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
# Upstream lerobot 0.6.1 as the pipeline's own recorders use it (finalized), with the fork recording's features.
UPSTREAM = SynthSpec(recordings=1, episodes=4, stroke_length=8, cameras=True, image_shape=(48, 64), seed=11,
                     format="lerobot")


@pytest.fixture(scope="module")
def pristine_upstream(tmp_path_factory) -> Path:
    [path] = make_recordings(tmp_path_factory.mktemp("upstream"), UPSTREAM)
    return path


def test_upstream_recording_stores_the_fork_features_differently(pristine_recording, pristine_upstream):
    """The premise of this file: same features, different parquet types and episodes columns."""
    assert SMALL.format == "v3.0" and pristine_recording.name < pristine_upstream.name  # the fork sorts first
    fork, upstream = (pq.read_schema(p / DATA) for p in (pristine_recording, pristine_upstream))
    assert fork.field("action").type == pa.list_(pa.float64())
    assert pa.types.is_fixed_size_list(upstream.field("action").type)
    assert upstream.field("action").type.value_type == pa.float32() and upstream.field("timestamp").type == pa.float32()
    assert "stats/action/q01" in pq.read_schema(pristine_upstream / EPISODES).names
    assert "stats/action/q01" not in pq.read_schema(pristine_recording / EPISODES).names


def test_a_split_over_fork_and_upstream_lerobot_recordings_builds_and_loads(settings, recording_copy,
                                                                             pristine_upstream):
    fork = recording_copy()
    upstream = recording_copy(source=pristine_upstream)
    for rec in (fork, upstream):
        write_report(settings, rec)
    result = build_splits(settings, SplitConfig(val_fraction=0.4, salt="test"))

    sources = {p.name: load(p) for p in (fork, upstream)}
    for side in ("train", "val"):
        root = result.root / side
        lineage = result.manifest["sides"][side]["lineage"]
        assert {name for name, _ in lineage} == {fork.name, upstream.name}  # both eras on each side
        ds = load(root)
        assert ds.num_episodes == len(lineage) and ds.meta.video_keys
        assert_frames_from_sources(ds, lineage, sources)
        # the first source's storage, and only the episodes columns every source has
        assert pq.read_schema(root / DATA).field("action").type == pa.list_(pa.float64())
        assert pq.read_schema(root / EPISODES).names == [
            n for n in pq.read_schema(fork / EPISODES).names if n in pq.read_schema(upstream / EPISODES).names]


def test_an_upstream_first_merge_casts_the_fork_rows_to_its_schema(recording_copy, pristine_upstream, tmp_path):
    fork = recording_copy()
    upstream = recording_copy(source=pristine_upstream)
    merged = write_merged_dataset([EpisodeSource("up", upstream, (0, 2)), EpisodeSource("fork", fork, (1, 3))],
                                  tmp_path / "m")
    schema = pq.read_schema(tmp_path / "m" / DATA)
    assert schema.field("action").type == pq.read_schema(upstream / DATA).field("action").type
    assert schema.field("timestamp").type == pa.float32()
    assert "stats/action/q01" not in pq.read_schema(tmp_path / "m" / EPISODES).names  # the fork has none
    assert_frames_from_sources(load(tmp_path / "m"), merged.lineage, {"up": load(upstream), "fork": load(fork)})


def test_a_v21_copy_converted_by_lerobot_alone_shares_a_split_with_a_fork_recording(
        settings, recording_copy, pristine_v21, pristine_recording_nocams, tmp_path):
    """Without `recorder_layout`: what lerobot's converter leaves (copies converted before it existed are reused)."""
    from lerobot.scripts.convert_dataset_v21_to_v30 import convert_dataset

    work = tmp_path / "converted"
    copy = work / "tatbot" / pristine_v21.name
    shutil.copytree(pristine_v21, copy)
    convert_dataset(repo_id=f"tatbot/{copy.name}", root=copy, push_to_hub=False, force_conversion=True)
    assert read_info(copy)["features"]["action"]["fps"] == 10
    assert "condition" in pq.read_schema(copy / EPISODES).names
    fork = recording_copy(source=pristine_recording_nocams)
    write_report(settings, copy, episodes=3)
    write_report(settings, fork)

    result = build_splits(settings, SplitConfig(val_fraction=0.4, salt="test"))
    sources = {copy.name: load(copy), fork.name: load(fork)}
    seen = []
    for side in ("train", "val"):
        lineage = result.manifest["sides"][side]["lineage"]
        assert_frames_from_sources(load(result.root / side), lineage, sources)
        seen += [name for name, _ in lineage]
    assert sorted(seen) == sorted([copy.name] * 3 + [fork.name] * 4)
    assert "condition" not in pq.read_schema(result.root / "train" / EPISODES).names
