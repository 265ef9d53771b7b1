"""Recordings as tatbot's recorder really writes them: joystick offsets, older eras, sessions in progress or resumed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from tatbot_pipeline.recordings.convert import LINEAGE_FILE
from tatbot_pipeline.recordings.validation_report import Severity, Status
from tatbot_pipeline.scene_yaml import load_scene
from tatbot_pipeline.recordings.validate import validate_recording
from tatbot_pipeline.synth import RecordingSession, SynthSpec, make_recordings, resume_recording
from tests.conftest import age_tree

DATA = "data/chunk-000/file-000.parquet"


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(p.relative_to(path).as_posix().encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def set_actions(rec: Path, rows: slice, arm: slice, values: np.ndarray) -> None:
    table = pq.read_table(rec / DATA)
    df = table.to_pandas()
    for row, value in zip(range(len(df))[rows], values):
        vec = np.array(df.at[row, "action"], dtype=np.float64)
        vec[arm] = value
        df.at[row, "action"] = vec.tolist()
    pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), rec / DATA)


# ---------------------------------------------------------------------------------------------- joystick offsets

def test_joystick_stroke_is_usable_and_its_offset_path_reported(recording_copy):
    """Stroke 2 of the pristine recording has joystick moves: the rule used to exclude it (one offset per stroke)."""
    report = validate_recording(recording_copy(), settle_seconds=0)
    assert report.status is Status.PASS, report.findings
    paths = report.summary["offset_paths"]
    assert paths[0] == {"left": [[3, 0]], "right": [[3, 0]]}  # offset_num 6: every index starts at 3
    changes = {ep: sum(len(runs) - 1 for runs in arms.values()) for ep, arms in paths.items()}
    assert changes == {0: 0, 1: 0, 2: 2, 3: 0}  # two moves, both in stroke 2
    for runs in paths[2].values():
        assert all(abs(b[0] - a[0]) == 1 for a, b in zip(runs, runs[1:]))


def test_only_frames_matching_no_offset_are_named(recording_copy):
    rec = recording_copy()
    joints = load_file(str(rec / "strokebatch.safetensors"))["joints"]
    set_actions(rec, slice(8 + 5, 8 + 7), slice(7, 13), joints[1, 5:7, 3, 7:13] + 0.05)  # stroke 1, frames 5-6, right arm
    report = validate_recording(rec, settle_seconds=0)
    assert report.episodes_excluded == {1: ["strokebatch: right actions at frame(s) 5-6 match no depth offset of "
                                           "strokebatch stroke 1 (closest off by 0.050 rad)"]}


def test_offset_jumping_two_steps_is_flagged(recording_copy):
    rec = recording_copy()
    joints = load_file(str(rec / "strokebatch.safetensors"))["joints"]
    set_actions(rec, slice(8 * 3 + 4, 8 * 4), slice(0, 7), joints[3, 4:, 5, :7])  # stroke 3, left: 3 -> 5 at frame 4
    report = validate_recording(rec, settle_seconds=0)
    [finding] = [f for f in report.findings if f.severity is Severity.EXCLUDE]
    assert finding.episode == 3 and "left depth offset jumps 3 -> 5 at frame 4" in finding.message


# --------------------------------------------------------------------------------------------------- older eras

def test_16_joint_strokebatch_is_mapped_not_failed(recording_copy, pristine_v21_16, tmp_path):
    rec = recording_copy(source=pristine_v21_16)
    report = validate_recording(rec, settle_seconds=0, converted_dir=tmp_path / "converted")
    assert report.status is Status.PASS, report.findings
    [info] = [f for f in report.findings if f.check == "strokebatch"]
    assert info.severity is Severity.INFO and "before 2025-07-24 (16 joints + dt)" in info.message
    batch = load_file(str(rec / "strokebatch.safetensors"))
    batch["joints"][1, :, :, 8:15] += 0.1  # the right arm's 7 joints of stroke 1, in the 16-joint layout
    save_file(batch, str(rec / "strokebatch.safetensors"))
    again = validate_recording(rec, settle_seconds=0, converted_dir=tmp_path / "converted")
    assert set(again.episodes_excluded) == {1} and "right actions" in again.episodes_excluded[1][0]


def test_v21_recording_is_validated_through_a_converted_copy(recording_copy, pristine_v21, settings):
    rec = recording_copy(source=pristine_v21)
    before = tree_digest(settings.recordings_dir)
    report = validate_recording(rec, settle_seconds=0, converted_dir=settings.converted_dir)
    assert report.status is Status.PASS, report.findings
    copy = settings.converted_dir / rec.name
    assert report.path == str(copy) and report.recording == rec.name
    assert tree_digest(settings.recordings_dir) == before  # the original and its root are untouched
    assert json.loads((copy / "meta/info.json").read_text())["codebase_version"] == "v3.0"
    lineage = json.loads((copy / LINEAGE_FILE).read_text())
    assert lineage["source"] == str(rec) and lineage["source_fingerprint"] == report.fingerprint
    assert report.summary["converted_from"] == {"path": str(rec), "codebase_version": "v2.1", "copy": str(copy)}
    [note] = [f for f in report.findings if f.check == "format_version"]
    assert note.severity is Severity.INFO and "made with lerobot's converter" in note.message
    for side_file in ("scene.yaml", "strokes.yaml", "strokebatch.safetensors", "logs/episode_000002.txt"):
        assert (copy / side_file).read_bytes() == (rec / side_file).read_bytes()
    again = validate_recording(rec, settle_seconds=0, converted_dir=settings.converted_dir)
    assert "reused" in [f for f in again.findings if f.check == "format_version"][0].message
    assert again.fingerprint == report.fingerprint


def test_conversion_never_writes_under_the_recordings_root(recording_copy, pristine_v21, recordings_root):
    rec = recording_copy(source=pristine_v21)
    report = validate_recording(rec, settle_seconds=0, converted_dir=recordings_root / ".converted")
    assert report.status is Status.FAIL
    assert "inside the recordings root" in report.findings[0].message
    assert sorted(p.name for p in recordings_root.iterdir()) == [rec.name]


def test_legacy_meta_data_layout_fails_clearly(tmp_path):
    rec = tmp_path / "stroke-default-2025y-03m-01d-10h-00m-00s"
    (rec / "meta_data").mkdir(parents=True)
    (rec / "meta_data" / "info.json").write_text(json.dumps({"fps": 10}))
    (rec / "scene.yaml").write_text("name: default\nstroke_length: 8\n")
    report = validate_recording(rec, settle_seconds=0, converted_dir=tmp_path / "converted")
    assert report.status is Status.FAIL
    [finding] = [f for f in report.findings if f.check == "format_version"]
    assert "legacy LeRobot layout (meta_data/" in finding.message and "no converter" in finding.message


# ------------------------------------------------------------------------------------------ sessions in progress

def test_fork_session_stopped_early_is_complete_and_resumed_session_revalidated(tmp_path):
    spec = SynthSpec(episodes=4, stroke_length=8, cameras=False, seed=13, saved_episodes=2)
    [rec] = make_recordings(tmp_path, spec)
    stopped = validate_recording(rec, settle_seconds=0)
    assert stopped.status is Status.PASS and stopped.episodes_usable == [0, 1]
    assert any(f.severity is Severity.INFO and "2 of 4 strokes recorded" in f.message for f in stopped.findings)
    (rec / "episode_000002").mkdir()  # stroke_tool makes a stroke's dir before recording it: stopped mid-stroke
    aborted = validate_recording(rec, settle_seconds=0)
    assert aborted.status is Status.WARN and aborted.headline().startswith("WARN 2/2 usable: stroke dir never saved: episode_000002/")
    (rec / "episode_000002").rmdir()
    resume_recording(rec, spec, design=load_scene(rec / "scene.yaml")["design_name"], seed=13000)
    resumed = validate_recording(rec, settle_seconds=0)
    assert resumed.status is Status.PASS and resumed.episodes_usable == [0, 1, 2, 3]
    assert resumed.fingerprint != stopped.fingerprint


@pytest.fixture
def live_lerobot_session(tmp_path):
    """An upstream lerobot recording caught mid-session: 11 strokes saved, parquet writers still open (no footers)."""
    spec = SynthSpec(episodes=12, stroke_length=4, cameras=False, seed=14, format="lerobot")
    path = tmp_path / "recordings" / "stroke-default-2025y-11m-03d-10h-00m-00s"
    session = RecordingSession(path, spec, design="snail", seed=1, at=spec.started)
    for ep in range(11):  # lerobot flushes episode metadata every 10 episodes into a ParquetWriter it keeps open
        session.record(ep)
    yield path
    session.dataset.close()


def test_fresh_footerless_parquet_is_incomplete_then_fails_once_settled(live_lerobot_session):
    rec = live_lerobot_session
    assert not (rec / "meta/episodes/chunk-000/file-000.parquet").read_bytes().endswith(b"PAR1")
    fresh = validate_recording(rec, settle_seconds=60)
    assert fresh.status is Status.INCOMPLETE
    assert "no parquet footer yet" in fresh.findings[0].message
    age_tree(rec, 3600)
    stale = validate_recording(rec, settle_seconds=60)
    assert stale.status is Status.FAIL and "never finalized" in stale.findings[0].message


def test_cli_reports_a_live_session_as_incomplete(live_lerobot_session, tmp_path):
    env = {**os.environ, "TATBOT_SETTLE_SECONDS": "60", "TATBOT_PIPELINE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "tatbot_pipeline.cli", "validate", "--json", str(live_lerobot_session)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1, out.stderr
    [row] = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["status"] == "incomplete" and row["findings"][0]["check"] == "finalized"


def test_cli_validates_v21_through_a_copy_under_the_pipeline_home(recording_copy, pristine_v21, tmp_path):
    rec = recording_copy(source=pristine_v21)
    home = tmp_path / "home"
    env = {**os.environ, "TATBOT_PIPELINE_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "tatbot_pipeline.cli", "validate", "--json", "--settle-seconds", "0",
                          str(rec)], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    [row] = [json.loads(line) for line in out.stdout.splitlines()]  # stdout stays JSON lines despite the converter
    assert row["status"] == "pass" and row["path"] == str(home / "converted" / rec.name)
    assert row["findings"][0]["check"] == "format_version" and row["findings"][0]["severity"] == "info"


def test_dead_arm_rule_resolves_the_scenes_sleep_pose_by_name(recording_copy):
    rec = recording_copy()
    text = (rec / "scene.yaml").read_text().replace("sleep_pos_l_name: left/sleep", "sleep_pos_l_name: left/nap")
    (rec / "scene.yaml").write_text(text)
    report = validate_recording(rec, settle_seconds=0)
    [warning] = [f for f in report.findings if f.check == "dead_arm"]
    assert warning.severity is Severity.WARNING and "unknown pose name 'left/nap'" in warning.message


def test_the_recordings_root_is_only_read(recording_copy, pristine_v21, settings):
    recording_copy()
    recording_copy(source=pristine_v21)
    before = tree_digest(settings.recordings_dir)
    for rec in sorted(settings.recordings_dir.iterdir()):
        validate_recording(rec, settle_seconds=0, converted_dir=settings.converted_dir)
    assert tree_digest(settings.recordings_dir) == before
    shutil.rmtree(settings.converted_dir)
