"""Recordings written by tatbot's own LeRobot fork (tests/fixtures): synth must match them, the pipeline must eat them.

The fixtures were made by tests/fixtures/make_fixtures.py with the fork's `LeRobotDataset` (v3.0 era and v2.1 era),
frames and tatbot side files from synth with the same spec and seed, so any difference below is a difference
between synth's emulation of the fork and the fork itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.datasets.build import build_splits
from tatbot_pipeline.datasets.split import SplitConfig
from tatbot_pipeline.recordings.validation_report import Status
from tatbot_pipeline.recordings.validate import validate_recording
from tatbot_pipeline.synth import write_recording
from tatbot_pipeline.training.presets import TrainOptions
from tatbot_pipeline.training.runner import train_policy
from tests.fixtures.make_fixtures import FIXTURES, fixture_path

ERAS = sorted(FIXTURES)


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def same(a, b, where: str) -> None:
    """Equal JSON-like values, floats to 1e-6 relative (the fork computes in the same float64 numpy)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple, np.ndarray)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module", params=ERAS)
def era_pair(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(era, the fork's recording, synth's recording of the same spec and seed)."""
    spec, design = FIXTURES[request.param]
    real = fixture_path(request.param)
    synthetic = tmp_path_factory.mktemp(request.param) / real.name
    write_recording(synthetic, spec, design=design, seed=spec.seed)
    return request.param, real, synthetic


def test_synth_writes_the_same_files_as_the_fork(era_pair):
    era, real, synthetic = era_pair
    assert files(synthetic) == files(real)  # git keeps no empty dirs, so only files are compared
    for rel in files(real):
        a, b = real / rel, synthetic / rel
        if rel.endswith(".parquet"):
            ta, tb = pq.read_table(a), pq.read_table(b)
            assert ta.schema.remove_metadata() == tb.schema.remove_metadata(), rel
            assert set(ta.schema.metadata or {}) == set(tb.schema.metadata or {}), rel
            same(json.loads(ta.to_pandas().to_json()), json.loads(tb.to_pandas().to_json()), rel)
        elif rel.endswith(".jsonl"):
            same([json.loads(x) for x in a.read_text().splitlines()], [json.loads(x) for x in b.read_text().splitlines()], rel)
        elif rel.endswith(".json"):
            same(json.loads(a.read_text()), json.loads(b.read_text()), rel)
        elif not rel.endswith(".mp4"):  # encoders differ by a few bytes; decoded content is checked by validation
            assert a.read_bytes() == b.read_bytes(), rel


def test_fork_v30_recording_validates_with_its_joystick_path(tmp_path):
    real = fixture_path("fork-v3.0")
    rec = tmp_path / "recordings" / real.name
    shutil.copytree(real, rec)
    report = validate_recording(rec, settle_seconds=0, converted_dir=tmp_path / "converted")
    assert report.status is Status.WARN, report.findings
    assert set(report.episodes_excluded) == {3}  # realsense1 timed out through stroke 3: black frames and warnings
    assert {r.split(":")[0] for r in report.episodes_excluded[3]} == {"cameras", "episode_logs"}
    assert len(report.summary["offset_paths"][2]["right"]) == 2  # the joystick moved the right needle in stroke 2


def test_pipeline_on_the_forks_recordings_validate_split_train(tmp_path):
    """Both eras end to end: v2.1 through its converted copy, merged with v3.0 into one split, two training steps."""
    settings = PipelineSettings(recordings_dir=tmp_path / "recordings", home=tmp_path / "home", settle_seconds=0)
    for era in ERAS:
        shutil.copytree(fixture_path(era), settings.recordings_dir / fixture_path(era).name)
    for rec in sorted(settings.recordings_dir.iterdir()):
        report = validate_recording(rec, settle_seconds=0, converted_dir=settings.converted_dir)
        assert report.usable, report.findings
        report.save(settings.report_path(report.recording))
    split = build_splits(settings, SplitConfig(val_fraction=0.25))
    sources = {name for side in split.manifest["sides"].values() for name, _ in side["lineage"]}
    assert sources == {fixture_path(era).name for era in ERAS}
    train = pd.read_parquet(split.root / "train" / "data/chunk-000/file-000.parquet")
    assert len(train) == 8 * split.manifest["sides"]["train"]["episodes"]
    run = train_policy("tiny_smolvla", split.root / "train", settings.train_dir / "fixtures", settings.hf_home,
                       TrainOptions(steps=2, save_freq=2), models_home=settings.home)
    assert (run.checkpoint_dir / "model.safetensors").exists()
