"""What a user wants to know about a recording at a glance (the `stroke_recording` asset's metadata)."""

from __future__ import annotations

import logging
from pathlib import Path

from tatbot_pipeline.lerobot_tables import read_info
from tatbot_pipeline.recordings.contents import Recording
from tatbot_pipeline.recordings.naming import parse_recording_name
from tatbot_pipeline.recordings.scan import content_fingerprint, size_on_disk
from tatbot_pipeline.scene_yaml import load_scene

log = logging.getLogger(__name__)


def summarize(rec: Recording) -> dict:
    """Facts from already-loaded parts of a recording; missing parts give None, never an error."""
    name = parse_recording_name(rec.name)
    info = rec.info or {}
    scene = rec.scene or {}
    arms = scene.get("arms") if isinstance(scene.get("arms"), dict) else {}
    fps = info.get("fps")
    frames = info.get("total_frames")
    return {
        "scene": name.scene if name else None,
        "design_name": scene.get("design_name"),
        "recorded_at": name.recorded_at.isoformat() if name else None,
        "episodes": info.get("total_episodes"),
        "frames": frames,
        "fps": fps,
        "stroke_length": rec.stroke_length,
        "offset_num": arms.get("offset_num"),
        "cameras": [k.removeprefix("observation.images.") for k in rec.video_keys],
        "duration_s": round(frames / fps, 2) if frames and fps else None,
        "robot_type": info.get("robot_type"),
        "codebase_version": info.get("codebase_version"),
        "features": info.get("features", {}),
    }


def describe_recording(path: Path) -> dict:
    """Summary plus size on disk and content fingerprint, reading only metadata (no tables, no video)."""
    rec = Recording(path=path)
    # Best effort: a recording without readable metadata is described by what is left; its validation report
    # turns the same problem into a finding, so here it is only logged.
    try:
        rec.info = read_info(path)
    except (OSError, ValueError) as e:
        log.info("%s: meta/info.json unreadable (%s: %s); described without it", path, type(e).__name__, e)
    try:
        rec.scene = load_scene(path / "scene.yaml")
    except Exception as e:  # noqa: BLE001 - any parse problem; the verdict lives in validation
        log.info("%s: scene.yaml unreadable (%s: %s); described without it", path, type(e).__name__, e)
    return {**summarize(rec), "size_bytes": size_on_disk(path), "fingerprint": content_fingerprint(path)}
