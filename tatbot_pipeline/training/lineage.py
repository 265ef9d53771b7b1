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
from tatbot_pipeline.datasets.build import split_changes
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


# What the loop brought in since the previous checkpoint: trained_policy's entries, shown by policy_evaluation too.
LOOP_ENTRIES = ("new_data", "new_recordings", "new_episodes")


def new_since_previous(splits_dir: Path, train_root: Path, previous_version: str | None,
                       first: bool) -> dict[str, tuple[str, Any]]:
    """Which recordings and how many episodes the split at `train_root` adds over the split the previous checkpoint
    was trained on (`previous_version` under `splits_dir`; `first`: there is no previous checkpoint), as
    `name -> (kind, value)` entries (LOOP_ENTRIES)."""
    current = split_manifest(train_root)
    if current is None:
        return {LOOP_ENTRIES[0]: ("text", "unknown: this split has no split.json")}
    previous = split_manifest(Path(splits_dir) / previous_version) if previous_version else None
    changes = split_changes(previous, current)
    new = changes["new_recordings"] + changes["changed_recordings"]
    count = sum(changes["new_episodes"].values())
    if first:
        headline = f"first checkpoint: all {count} episodes of {len(new)} recordings are new"
    elif previous is None:
        headline = f"previous checkpoint's split {previous_version or '(unknown)'} is gone: counted against nothing"
    else:
        headline = (f"{count} new episodes (train {changes['new_episodes']['train']}, val "
                    f"{changes['new_episodes']['val']}) from {len(changes['new_recordings'])} new and "
                    f"{len(changes['changed_recordings'])} changed recordings; split {previous_version} -> "
                    f"{changes['version']}")
    lines = [headline] + [f"- {name}" for name in new[:20]] + ([f"- … {len(new) - 20} more"] if len(new) > 20 else [])
    if changes["removed_recordings"] and previous is not None:
        lines.append(f"\nno longer in the split: {', '.join(changes['removed_recordings'][:20])}")
    return {LOOP_ENTRIES[0]: ("md", "\n".join(lines)), LOOP_ENTRIES[1]: ("json", new), LOOP_ENTRIES[2]: ("int", count)}
