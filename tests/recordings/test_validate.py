"""Each recorder defect, injected into a copy of a synthetic recording, gets the right verdict and exclusions."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from tatbot_pipeline.recordings.validation_report import Severity, Status
from tatbot_pipeline.scene_yaml import load_scene
from tatbot_pipeline.recordings.validate import validate_recording
from tatbot_pipeline.synth import SynthSpec, make_recordings
from tests.conftest import age_tree, as_never_connected

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"


def edit_data(rec: Path, edit) -> None:
    """Rewrite the data parquet after `edit(df)` changed it in place, keeping LeRobot's schema."""
    table = pq.read_table(rec / DATA)
    df = table.to_pandas()
    edit(df)
    pq.write_table(pa.Table.from_pandas(df, schema=table.schema, preserve_index=False), rec / DATA)


def set_vector(df, row: int, column: str, joint: int, value: float) -> None:
    vec = np.array(df.at[row, column], dtype=np.float32)
    vec[joint] = value
    df.at[row, column] = vec


def excluded(report) -> set[int]:
    return set(report.episodes_excluded)


def checks(report, severity: Severity | None = None) -> set[str]:
    return {f.check for f in report.findings if severity is None or f.severity is severity}


def test_pristine_recording_passes(recording_copy):
    report = validate_recording(recording_copy(), settle_seconds=0)
    assert report.status is Status.PASS, report.findings
    assert report.episodes_usable == [0, 1, 2, 3]
    assert report.findings == []
    assert report.summary["stroke_length"] == 8 and report.summary["fps"] == 10
    assert report.summary["cameras"] == ["realsense1", "realsense2"]
    assert len(report.fingerprint) == 16


def test_nan_action_excludes_that_episode(recording_copy):
    rec = recording_copy()
    edit_data(rec, lambda df: set_vector(df, 8 + 3, "action", 2, float("nan")))  # episode 1, frame 3
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.WARN
    assert excluded(report) == {1}
    assert "finite" in checks(report, Severity.EXCLUDE)
    assert report.episodes_usable == [0, 2, 3]


def test_action_beyond_urdf_limit_is_excluded(recording_copy):
    rec = recording_copy()
    edit_data(rec, lambda df: set_vector(df, 2 * 8, "action", 13, 0.5))  # right gripper limit is 0.04
    report = validate_recording(rec, settle_seconds=0)
    assert excluded(report) == {2}
    msgs = [f.message for f in report.findings if f.check == "urdf_limits"]
    assert msgs and "right.gripper.pos" in msgs[0]


def test_broken_timestamps_are_excluded(recording_copy):
    rec = recording_copy()

    def stretch(df):
        df.loc[df.episode_index == 3, "timestamp"] *= 2

    edit_data(rec, stretch)
    report = validate_recording(rec, settle_seconds=0)
    assert excluded(report) == {3}
    assert "fps" in checks(report, Severity.EXCLUDE)


def test_actions_not_matching_strokebatch_are_excluded(recording_copy):
    rec = recording_copy()
    batch = load_file(str(rec / "strokebatch.safetensors"))
    batch["joints"][0, :, :, 0:7] += 0.2  # left arm of stroke 0 at every offset
    save_file(batch, str(rec / "strokebatch.safetensors"))
    report = validate_recording(rec, settle_seconds=0)
    assert excluded(report) == {0}
    assert any("left actions at frame(s) 0-7 match no depth offset of strokebatch stroke 0" in f.message for f in report.findings)


def test_log_anomalies(recording_copy):
    rec = recording_copy()
    with open(rec / "logs/episode_000000.txt", "a") as f:
        f.write("2025y-08m-09d-17h-02m-11s|tools.stroke|WARNING| ⚠️ Robot is not connected. Attempting to reconnect...\n")
    with open(rec / "logs/episode_000002.txt", "a") as f:
        f.write("2025y-08m-09d-17h-02m-12s|trossen|WARNING| position mismatch on joint 3\n")
    (rec / "logs/episode_000003.txt").unlink()
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.WARN
    assert excluded(report) == {0}
    warned = {f.episode for f in report.findings if f.severity is Severity.WARNING}
    assert warned == {2, 3}
    assert report.episodes_usable == [1, 2, 3]


def test_orphan_episode_dir_is_reported(recording_copy):
    rec = recording_copy()
    (rec / "episode_000004").mkdir()
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.WARN
    assert report.episodes_usable == [0, 1, 2, 3]
    assert any(f.check == "orphans" and "episode_000004" in f.message for f in report.findings)


def test_missing_strokebatch_fails(recording_copy):
    rec = recording_copy()
    (rec / "strokebatch.safetensors").unlink()
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.FAIL
    assert report.episodes_usable == []
    assert any("strokebatch.safetensors missing" in f.message for f in report.findings)


def test_wrong_stroke_length_excludes_everything_so_recording_fails(recording_copy):
    rec = recording_copy()
    scene = (rec / "scene.yaml").read_text().replace("stroke_length: 8", "stroke_length: 16")
    (rec / "scene.yaml").write_text(scene)
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.FAIL
    assert excluded(report) == {0, 1, 2, 3}



def test_unfinalized_recording_is_incomplete_while_fresh_and_fails_when_stale(recording_copy):
    rec = recording_copy()
    shutil.rmtree(rec / "meta/episodes")
    os.utime(rec / "meta/info.json")  # stroke_tool rewrites info.json after every saved episode
    fresh = validate_recording(rec, settle_seconds=60)
    assert fresh.status is Status.INCOMPLETE
    age_tree(rec, 3600)
    stale = validate_recording(rec, settle_seconds=60)
    assert stale.status is Status.FAIL
    assert any("never finalized" in f.message for f in stale.findings)


def test_a_session_whose_robot_never_connected_is_empty_until_episodes_appear(recording_copy, tmp_path):
    """stroke_tool writes scene.yaml, strokes.yaml, arrays/ and the strokebatch before connecting; a failed connect
    leaves just those. That is `empty` (not a failure); once strokes are recorded into it (`stroke_tool resume`), it
    is validated like any recording."""
    rec, stash = recording_copy(), tmp_path / "recorded"
    as_never_connected(rec, stash)
    assert {p.name for p in rec.iterdir()} == {"scene.yaml", "strokes.yaml", "arrays", "strokebatch.safetensors"}
    assert validate_recording(rec, settle_seconds=60).status is Status.INCOMPLETE  # may be connecting right now
    age_tree(rec, 3600)
    empty = validate_recording(rec, settle_seconds=60)
    assert empty.status is Status.EMPTY
    assert not empty.usable and not empty.failed
    assert empty.headline() == "EMPTY: no strokes recorded (no meta/) — the robot never connected?"
    for part in stash.iterdir():
        shutil.move(part, rec / part.name)
    resumed = validate_recording(rec, settle_seconds=0)
    assert resumed.status is Status.PASS and resumed.episodes_usable == [0, 1, 2, 3]


def test_truncated_episodes_parquet_fails_without_traceback(recording_copy):
    rec = recording_copy()
    data = (rec / EPISODES).read_bytes()
    (rec / EPISODES).write_bytes(data[: len(data) // 2])  # writer never closed: no footer
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.FAIL
    assert any("no parquet footer" in f.message and "never finalized" in f.message for f in report.findings)


def test_v21_without_a_place_for_the_copy_is_refused_clearly(recording_copy, pristine_v21):
    rec = recording_copy(source=pristine_v21)
    report = validate_recording(rec, settle_seconds=0)  # a library call that gave no converted_dir
    assert report.status is Status.FAIL
    [finding] = [f for f in report.findings if f.check == "format_version"]
    assert "v2.1" in finding.message and "converts a copy under the pipeline home" in finding.message


def test_a_failed_conversion_says_why_once(recording_copy, pristine_v21):
    rec = recording_copy(source=pristine_v21)
    report = validate_recording(rec, settle_seconds=0, converted_dir=rec.parent / ".converted")
    assert report.status is Status.FAIL
    [finding] = [f for f in report.findings if f.check == "format_version"]
    assert "is inside the recordings root" in finding.message and "no place for the copy" not in finding.message


def test_garbage_files_fail_without_traceback(recording_copy):
    rec = recording_copy()
    (rec / "meta/info.json").write_text("{not json")
    (rec / "scene.yaml").write_text(": : :\n  - [")
    report = validate_recording(rec, settle_seconds=0)
    assert report.status is Status.FAIL
    assert {"metadata", "scene"} <= checks(report, Severity.ERROR)


def test_missing_dir_fails(tmp_path: Path):
    report = validate_recording(tmp_path / "stroke-x-2025y-01m-01d-00h-00m-00s", settle_seconds=0)
    assert report.status is Status.FAIL


@pytest.fixture(scope="module")
def silent_failures(tmp_path_factory) -> Path:
    """A recording where the recorder failed silently: a dead left arm in episode 1, a black camera in episode 2."""
    spec = SynthSpec(episodes=4, stroke_length=8, cameras=True, image_shape=(48, 64), seed=11,
                     dead_arm_episodes=(1,), black_camera_episodes=(2,))
    return make_recordings(tmp_path_factory.mktemp("silent"), spec)[0]


def test_dead_arm_and_black_camera_are_excluded(silent_failures: Path):
    report = validate_recording(silent_failures, settle_seconds=0)
    assert report.status is Status.WARN
    reasons = report.episodes_excluded
    assert set(reasons) == {1, 2}
    assert any("sleep pose" in r for r in reasons[1])
    assert any("realsense1" in r and "black" in r for r in reasons[2])
    assert report.episodes_usable == [0, 3]
    # The fork's own warnings, logged through the root logger, exclude the same episodes — with no serial in them.
    assert any(r.startswith("episode_logs:") and "Failed to get left arm positions" in r for r in reasons[1])
    [camera_log] = [r for r in reasons[2] if r.startswith("episode_logs:")]
    serial = load_scene(silent_failures / "scene.yaml")["cams"]["realsenses"][0]["serial_number"]
    assert "Failed to read realsense1" in camera_log and serial not in camera_log and "RealSenseCamera(***)" in camera_log


def test_failure_logs_are_root_logger_lines_like_the_fork(silent_failures: Path):
    stamp = r"\d{4}y-\d{2}m-\d{2}d-\d{2}h-\d{2}m-\d{2}s"  # tatbot's TIME_FORMAT
    dead = (silent_failures / "logs/episode_000001.txt").read_text()
    assert re.match(rf"{stamp} WARNING: 🦾❌ Failed to get left arm positions:\n", dead)
    assert re.search(rf"^{stamp} WARNING: 🦾❌ Failed to set left arm positions: $", dead, re.M)
    camera = (silent_failures / "logs/episode_000002.txt").read_text().splitlines()
    assert len(camera) == 8 and all(re.match(rf"{stamp} WARNING: ❌🎥 Failed to read realsense1: Timed out", line) for line in camera)
    assert (silent_failures / "logs/episode_000000.txt").read_text() == ""


def test_grey_level_from_the_luma_plane_matches_a_full_conversion(silent_failures: Path):
    """The camera rule reads grey off the luma plane (limited range mapped to 0..255) instead of converting every
    pixel: it must agree with lerobot's decoder's own grey conversion, and black must stay black."""
    import av

    from tatbot_pipeline.recordings.rules import BLACK_LUMA, mean_grey

    seen_black = seen_lit = 0
    for video in sorted(silent_failures.glob("videos/*/chunk-*/file-*.mp4")):
        with av.open(str(video)) as container:
            for frame in container.decode(container.streams.video[0]):
                full = float(frame.to_ndarray(format="gray").mean())
                assert abs(mean_grey(frame) - full) < 1.0, (video, frame.pts)
                seen_black += full < BLACK_LUMA
                seen_lit += full > 4 * BLACK_LUMA
    assert seen_black and seen_lit  # the fixture has both
