"""Validation rules. Each rule looks at a loaded Recording and yields findings; none stops the others.

Episode-level problems carry Severity.EXCLUDE and the episode index, so one bad stroke costs one episode, not the
recording. Rules register themselves in RULES (the way LeRobot registers policy configs), in the order they run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tatbot_pipeline.recordings.contents import Recording
from tatbot_pipeline.recordings.validation_report import Finding, Severity
from tatbot_pipeline.scene_yaml import REDACTED, secret_values
from tatbot_pipeline.recordings.strokebatch import LEGACY_JOINTS, match_offsets, robot_joints
from tatbot_pipeline.robot.spec import RECORDED_LIMIT_TOLERANCE as LIMIT_TOLERANCE
from tatbot_pipeline.robot.spec import (
    ARMS,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    NUM_JOINTS,
    SLEEP_POSE,
    UnknownPose,
    arm_slice,
    scene_pose,
)

Rule = Callable[[Recording], Iterator[Finding]]
RULES: dict[str, Rule] = {}

STROKE_MATCH_ATOL = 1e-3  # recorded actions are float32 copies of strokebatch joints
SLEEP_ATOL = 1e-3
BLACK_LUMA = 8.0  # mean 0..255 grey level below which a camera frame is "black" (failed read)
# What tatbot's recorder logs when something went wrong during a stroke (DESIGN.md §1).
LOG_EXCLUDE = re.compile(r"not connected|Failed to read|not responsive|❌", re.I)
LOG_WARN = re.compile(r"position mismatch|⚠️")


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


def _episodes(rec: Recording) -> list[int]:
    return [int(e) for e in rec.episodes["episode_index"]] if rec.episodes is not None else []


@rule("metadata")
def check_metadata(rec: Recording) -> Iterator[Finding]:
    """info.json, the episodes table and the data table must tell the same story."""
    info, eps, frames = rec.info, rec.episodes, rec.frames
    if info is None or eps is None or frames is None:
        return
    n_eps = len(eps)
    if info.get("total_episodes") != n_eps:
        yield Finding("metadata", Severity.ERROR, f"info.json says {info.get('total_episodes')} episodes, meta/episodes has {n_eps}")
    if n_eps == 0:
        yield Finding("metadata", Severity.ERROR, "no episodes recorded")
        return
    if list(eps["episode_index"]) != list(range(n_eps)):
        yield Finding("metadata", Severity.ERROR, "episode indices are not 0..n-1 in meta/episodes")
    if info.get("total_frames") != len(frames.index):
        yield Finding("metadata", Severity.ERROR, f"info.json says {info.get('total_frames')} frames, data has {len(frames.index)}")
    if not np.array_equal(np.sort(frames.index), np.arange(len(frames.index))):
        yield Finding("metadata", Severity.ERROR, "global frame index is not contiguous 0..N-1")
    fps = rec.fps
    if fps <= 0:
        yield Finding("fps", Severity.ERROR, f"fps is {fps}")
        return
    for ep, length in zip(eps["episode_index"], eps["length"]):
        rows = frames.episode(int(ep))
        if len(rows) == 0:
            yield Finding("metadata", Severity.EXCLUDE, "no frames in data", int(ep))
            continue
        if len(rows) != int(length):
            yield Finding("metadata", Severity.EXCLUDE, f"{len(rows)} frames in data, meta/episodes says {length}", int(ep))
        if not np.array_equal(frames.frame_index[rows], np.arange(len(rows))):
            yield Finding("metadata", Severity.EXCLUDE, "frame_index is not 0..n-1", int(ep))
        dt = np.diff(frames.timestamp[rows])
        if len(dt) and not np.allclose(dt, 1.0 / fps, atol=1e-3):
            yield Finding("fps", Severity.EXCLUDE, f"timestamps not spaced 1/fps={1 / fps:.3f}s (spacing {dt.min():.3f}–{dt.max():.3f}s)", int(ep))


@rule("stroke_length")
def check_stroke_length(rec: Recording) -> Iterator[Finding]:
    if rec.episodes is None or rec.stroke_length is None:
        return
    for ep, length in zip(rec.episodes["episode_index"], rec.episodes["length"]):
        if int(length) != rec.stroke_length:
            yield Finding("stroke_length", Severity.EXCLUDE, f"{length} frames, scene.stroke_length is {rec.stroke_length}", int(ep))


@rule("finite")
def check_finite(rec: Recording) -> Iterator[Finding]:
    if rec.frames is None:
        return
    for ep in _episodes(rec):
        rows = rec.frames.episode(ep)
        for label, values in (("action", rec.frames.action[rows]), ("observation.state", rec.frames.state[rows])):
            bad = ~np.isfinite(values)
            if bad.any():
                joints = sorted({JOINT_NAMES[j] for j in np.nonzero(bad)[1]})
                yield Finding("finite", Severity.EXCLUDE, f"NaN/inf in {label} ({', '.join(joints)})", ep)


@rule("urdf_limits")
def check_limits(rec: Recording) -> Iterator[Finding]:
    if rec.frames is None or rec.frames.action.shape[1] != NUM_JOINTS:
        if rec.frames is not None:
            yield Finding("urdf_limits", Severity.ERROR, f"action has {rec.frames.action.shape[1]} joints, tatbot has {NUM_JOINTS}")
        return
    lo, hi = JOINT_LOWER - LIMIT_TOLERANCE, JOINT_UPPER + LIMIT_TOLERANCE
    for ep in _episodes(rec):
        rows = rec.frames.episode(ep)
        for label, values in (("action", rec.frames.action[rows]), ("observation.state", rec.frames.state[rows])):
            with np.errstate(invalid="ignore"):
                out = (values < lo) | (values > hi)
            if out.any():
                j = int(np.nonzero(out.any(axis=0))[0][0])
                worst = values[:, j][out[:, j]]
                yield Finding(
                    "urdf_limits", Severity.EXCLUDE,
                    f"{label} {JOINT_NAMES[j]} reaches {worst[np.argmax(np.abs(worst))]:.3f}, "
                    f"limits [{JOINT_LOWER[j]:.3f}, {JOINT_UPPER[j]:.3f}]", ep,
                )


@rule("dead_arm")
def check_dead_arm(rec: Recording) -> Iterator[Finding]:
    """An arm whose reads fail reports its home (sleep) pose in every frame while the commands keep moving.

    The fork falls back to the scene's sleep pose, which scene.yaml names (`sleep_pos_l_name: left/sleep`); it is
    resolved through tatbot's pose table, never guessed.
    """
    if rec.frames is None or rec.frames.state.shape[1] != NUM_JOINTS:
        return
    sleep = _sleep_pose(rec)
    if isinstance(sleep, Finding):
        yield sleep
        sleep = SLEEP_POSE
    for ep in _episodes(rec):
        rows = rec.frames.episode(ep)
        for arm in ARMS:
            s = arm_slice(arm)
            state = rec.frames.state[rows, s]
            if len(state) and np.allclose(state, sleep[s], atol=SLEEP_ATOL):
                yield Finding("dead_arm", Severity.EXCLUDE, f"{arm} arm reports the sleep pose in every frame (disconnected?)", ep)
            elif len(state) > 2 and np.ptp(state, axis=0).max() == 0 and np.ptp(rec.frames.action[rows, s], axis=0).max() > 1e-3:
                yield Finding("dead_arm", Severity.EXCLUDE, f"{arm} arm state frozen while its commands move", ep)


def _sleep_pose(rec: Recording) -> np.ndarray | Finding:
    """The scene's sleep pose, or a warning finding saying why tatbot's standard one is used instead."""
    try:
        pose = scene_pose(rec.scene or {}, "sleep")
    except (UnknownPose, ValueError) as e:
        return Finding("dead_arm", Severity.WARNING, f"scene.yaml sleep pose unusable ({e}); checked against tatbot's standard sleep pose")
    if pose is None:
        return Finding("dead_arm", Severity.WARNING, "scene.yaml names no sleep pose; checked against tatbot's standard sleep pose")
    return pose


@rule("strokebatch")
def check_strokebatch(rec: Recording) -> Iterator[Finding]:
    """Recorded actions of stroke i must follow strokebatch.joints[i, t, k(t)], with a depth-offset path k(t) per arm.

    k(t) is piecewise constant and moves one step at a time (the joystick), so a stroke may use several offsets;
    only frames no offset explains, or a jump of more than one step, exclude the episode. The paths go into the
    summary (`offset_paths`) so the UI shows where the operator moved the needle.
    """
    raw, frames = rec.strokebatch_joints, rec.frames
    if raw is None or frames is None or rec.episodes is None:
        return
    if raw.ndim != 4 or raw.shape[-1] not in (NUM_JOINTS, LEGACY_JOINTS):
        yield Finding("strokebatch", Severity.ERROR, f"joints has shape {raw.shape}, expected (b, l, o, {NUM_JOINTS})")
        return
    if raw.shape[-1] == LEGACY_JOINTS:
        yield Finding("strokebatch", Severity.INFO, "strokebatch from before 2025-07-24 (16 joints + dt): compared "
                      "through the fork's mapping of that time (each arm's gripper carriage joint, URDF 7 and 15, dropped)")
    joints = robot_joints(raw)
    b, length = joints.shape[:2]
    if b < len(rec.episodes):
        yield Finding("strokebatch", Severity.WARNING, f"strokebatch has {b} strokes, recording has {len(rec.episodes)} episodes")
    elif b > len(rec.episodes):
        yield Finding("strokebatch", Severity.INFO, f"{len(rec.episodes)} of {b} strokes recorded (session stopped "
                      "early or still running; stroke_tool resume appends the rest)")
    paths = rec.facts.setdefault("offset_paths", {})
    for ep in _episodes(rec):
        if ep >= b:
            yield Finding("strokebatch", Severity.EXCLUDE, "no stroke in strokebatch for this episode", ep)
            continue
        actions = frames.action[frames.episode(ep)]
        if len(actions) != length or not np.isfinite(actions).all():
            continue  # already excluded by stroke_length/metadata/finite; a mismatch would say nothing more
        for arm in ARMS:
            s = arm_slice(arm)
            path = match_offsets(np.abs(joints[ep, :, :, s] - actions[:, None, s]).max(axis=2), STROKE_MATCH_ATOL)
            paths.setdefault(ep, {})[arm] = path.runs()
            if path.unmatched:
                yield Finding("strokebatch", Severity.EXCLUDE,
                              f"{arm} actions at frame(s) {_frames(path.unmatched)} match no depth offset of strokebatch "
                              f"stroke {ep} (closest off by {path.worst_error:.3f} rad)", ep)
            for t, before, after in path.jumps:
                yield Finding("strokebatch", Severity.EXCLUDE,
                              f"{arm} depth offset jumps {before} -> {after} at frame {t} (the joystick moves it one step at a time)", ep)


def _frames(frames: list[int]) -> str:
    """`3, 5-7`: frame numbers in runs, short enough for a table cell."""
    runs: list[list[int]] = []
    for t in frames:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


@rule("episode_logs")
def check_logs(rec: Recording) -> Iterator[Finding]:
    """stroke_tool's episode logs hold the root logger's lines (mostly the fork's robot); clean strokes log nothing."""
    logs = rec.path / "logs"
    secrets = sorted(secret_values(rec.scene or {}), key=len, reverse=True)
    for ep in _episodes(rec):
        log = logs / f"episode_{ep:06d}.txt"
        if not log.exists():
            yield Finding("episode_logs", Severity.WARNING, f"logs/{log.name} missing", ep)
            continue
        text = log.read_text(encoding="utf-8", errors="replace")
        bad = [line.strip() for line in text.splitlines() if LOG_EXCLUDE.search(line)]
        if bad:
            # The fork's messages name camera serials and arm addresses: keep them out of reports.
            line = bad[0]
            for secret in secrets:
                line = line.replace(secret, REDACTED)
            yield Finding("episode_logs", Severity.EXCLUDE, f"recorder logged a failure ({len(bad)} line(s)): {line[:200]}", ep)
        elif any(LOG_WARN.search(line) for line in text.splitlines()):
            yield Finding("episode_logs", Severity.WARNING, "recorder logged a warning (position mismatch?)", ep)


@rule("orphans")
def check_orphans(rec: Recording) -> Iterator[Finding]:
    """episode_NNNNNN/ dirs beyond the last saved episode come from strokes that were started but never saved."""
    known = set(_episodes(rec))
    for d in sorted(rec.path.glob("episode_*")):
        idx = d.name.removeprefix("episode_")
        if d.is_dir() and idx.isdigit() and rec.episodes is not None and int(idx) not in known:
            yield Finding("orphans", Severity.WARNING, f"{d.name}/ has no saved episode (stroke aborted before save?)")


@rule("cameras")
def check_cameras(rec: Recording) -> Iterator[Finding]:
    """Decode the key frames of each camera video and flag episodes with black frames (failed camera reads)."""
    if rec.episodes is None:
        return
    for key in rec.video_keys:
        col = f"videos/{key}"
        if f"{col}/chunk_index" not in rec.episodes:
            yield Finding("cameras", Severity.ERROR, f"meta/episodes has no video mapping for {key}")
            continue
        for (chunk, file), eps in rec.episodes.groupby([f"{col}/chunk_index", f"{col}/file_index"]):
            video = rec.path / "videos" / key / f"chunk-{int(chunk):03d}" / f"file-{int(file):03d}.mp4"
            try:
                samples = sample_luma(video)
            except Exception as e:  # boundary: corrupt or missing video
                for ep in eps["episode_index"]:
                    yield Finding("cameras", Severity.EXCLUDE, f"{key}: video unreadable ({type(e).__name__}: {e})", int(ep))
                continue
            for ep, start, end in zip(eps["episode_index"], eps[f"{col}/from_timestamp"], eps[f"{col}/to_timestamp"]):
                lumas = [luma for ts, luma in samples if start - 1e-6 <= ts < end - 1e-6]
                dark = sum(luma < BLACK_LUMA for luma in lumas)
                if not lumas:
                    yield Finding("cameras", Severity.EXCLUDE, f"{key}: no decodable frames in this episode", int(ep))
                elif dark:
                    yield Finding("cameras", Severity.EXCLUDE, f"{key}: {dark} of {len(lumas)} sampled frames black (camera read failed?)", int(ep))


def sample_luma(video: Path) -> list[tuple[float, float]]:
    """(timestamp, mean grey level) of every key frame; lerobot encodes with a short GOP, so that is a dense sample."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        return [(float(frame.pts * stream.time_base), mean_grey(frame)) for frame in container.decode(stream)]


_PLANAR_YUV = ("yuv420p", "yuv422p", "yuv444p", "yuvj420p", "yuvj422p", "yuvj444p")
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def mean_grey(frame) -> float:
    """Mean 0..255 grey level of a decoded frame, read off every 4th luma sample: a colour conversion of every pixel
    was most of the validation's time, and a failed camera read is black all over."""
    if frame.format.name not in _PLANAR_YUV:
        return float(frame.to_ndarray(format="gray").mean())
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[::4, : frame.width : 4]
    mean = float(luma.mean())
    if frame.format.name.startswith("yuvj") or frame.color_range == _FULL_RANGE:
        return mean
    return max(0.0, (mean - 16.0) * 255.0 / 219.0)  # limited ("TV") range: luma 16..235 is black..white
