"""What a user wants to know about a recording at a glance (the `stroke_recording` asset's metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from tatbot_pipeline.recordings.contents import Recording
from tatbot_pipeline.recordings.naming import parse_recording_name
from tatbot_pipeline.recordings.scan import content_fingerprint, size_on_disk
from tatbot_pipeline.recordings.scene import load_scene


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
    try:
        rec.info = json.loads((path / "meta" / "info.json").read_text())
    except (OSError, ValueError):
        pass  # a recording without readable metadata is described by what is left; validation says why
    try:
        rec.scene = load_scene(path / "scene.yaml")
    except Exception:  # noqa: BLE001 - same: description is best effort, the verdict lives in validation
        pass
    return {**summarize(rec), "size_bytes": size_on_disk(path), "fingerprint": content_fingerprint(path)}
