"""Where a checkpoint came from: the split it was trained on, the scene it shows, the code that trained it.

The split builder writes `<version>/split.json` beside `train/` and `val/`; a split built by hand (or an older
one) has none, so the identity then falls back to a fingerprint of the dataset's own metadata files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from tatbot_pipeline.datasets.build import MANIFEST as SPLIT_MANIFEST
from tatbot_pipeline.scene_yaml import load_scene, scrub


def split_manifest(train_root: Path) -> dict[str, Any] | None:
    """The split's manifest (`split.json` in the split dir or its version dir), None when there is none."""
    for candidate in (Path(train_root) / SPLIT_MANIFEST, Path(train_root).parent / SPLIT_MANIFEST):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def split_identity(train_root: Path) -> dict[str, Any]:
    """`version` and per-recording `fingerprints` of the split (from its manifest, else hashed from its metadata)."""
    train_root = Path(train_root)
    manifest = split_manifest(train_root)
    if manifest is not None:
        return {
            "version": str(manifest.get("version", "unknown")),
            "fingerprints": {r["name"]: r.get("fingerprint") for r in manifest.get("recordings", [])},
            "source": str(train_root.resolve()),
        }
    digest = hashlib.sha256()
    meta = train_root / "meta"
    for path in sorted([meta / "info.json", meta / "stats.json", *meta.glob("episodes/chunk-*/file-*.parquet")]):
        if path.is_file():
            digest.update(path.relative_to(train_root).as_posix().encode())
            digest.update(path.read_bytes())
    fingerprint = digest.hexdigest()[:12]
    return {"version": fingerprint, "fingerprints": {train_root.name: fingerprint}, "source": str(train_root.resolve())}


def scene_snapshot(train_root: Path) -> dict[str, Any] | None:
    """Scrubbed scene.yaml of the split's first recording (or the dataset's own scene.yaml), None if none is found.

    Scrubbed because scene.yaml holds camera credentials and serials, and this goes into Dagster metadata.
    """
    train_root = Path(train_root)
    candidates = [train_root / "scene.yaml"]
    manifest = split_manifest(train_root) or {}
    candidates += [Path(r["path"]) / "scene.yaml" for r in manifest.get("recordings", []) if r.get("path")]
    for path in candidates:
        if path.is_file():
            return scrub(load_scene(path))
    return None


def code_version() -> str:
    """`tatbot_pipeline <version> (<git sha>[-dirty]), lerobot <version>`: enough to rebuild the trainer."""
    from tatbot_pipeline import __version__

    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = "no git"
    return f"tatbot_pipeline {__version__} ({sha}), lerobot {importlib_metadata.version('lerobot')}"
