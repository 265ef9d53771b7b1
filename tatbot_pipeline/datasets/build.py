"""Build the versioned train/val split: select -> check compatible -> assign -> merge -> point `latest` at it.

A split version is a content hash of its inputs (each recording's fingerprint and usable episodes, the config),
so re-materializing with unchanged inputs reuses the existing dirs instead of rewriting gigabytes of video.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.datasets.merge import EpisodeSource, SourceCache, write_merged_dataset
from tatbot_pipeline.datasets.selection import RecordingEntry, check_compatible, load_usable_recordings
from tatbot_pipeline.datasets.split import Assignment, SplitConfig, assign
from tatbot_pipeline.files import write_atomic
from tatbot_pipeline.recordings.scan import RecordingsRootError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the merged layout changes, so old versions are not reused
MANIFEST = "split.json"
SIDES = ("train", "val")


@dataclass
class SplitResult:
    """What was built (or reused); `manifest` is also saved as <version>/split.json for lineage."""

    version: str
    root: Path
    reused: bool
    manifest: dict = field(default_factory=dict)

    def side_path(self, side: str) -> Path | None:
        info = self.manifest["sides"].get(side)
        return self.root / side if info else None


def content_id(entry: RecordingEntry) -> str:
    """The report's fingerprint; without one, sizes and mtimes of the LeRobot files stand in for it."""
    if entry.fingerprint:
        return entry.fingerprint
    h = hashlib.sha256()
    for sub in ("meta", "data", "videos"):
        for f in sorted((entry.path / sub).rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(entry.path)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return "stat:" + h.hexdigest()[:16]


def split_version(recordings: list[RecordingEntry], config: SplitConfig) -> str:
    payload = {
        "format": FORMAT_VERSION,
        "config": asdict(config),
        "recordings": [[e.name, content_id(e), list(e.episodes)] for e in sorted(recordings, key=lambda e: e.name)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def build_splits(settings: PipelineSettings, config: SplitConfig) -> SplitResult:
    """Merged train/val LeRobot datasets from the usable episodes; never writes under the recordings root."""
    _require_recordings_root(settings.recordings_dir, settings.validation_dir)
    selection = check_compatible(load_usable_recordings(settings.validation_dir), config.group_key, config.group_value)
    recordings = sorted(selection.recordings, key=lambda e: e.name)
    version = split_version(recordings, config)
    root = settings.splits_dir / version
    _refuse_inside_recordings(root, settings.recordings_dir)
    if (root / MANIFEST).exists():
        log.info("split %s already built at %s: reusing it", version, root)
        point_latest(settings.splits_dir, version)
        manifest = json.loads((root / MANIFEST).read_text())
        manifest["skipped"] = selection.skipped  # failed recordings do not change the version, but show them
        return SplitResult(version, root, reused=True, manifest=manifest)

    assignment = assign(recordings, config)
    tmp = settings.splits_dir / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sides = {}
        with SourceCache() as cache:
            for side in SIDES:
                chosen = assignment.side(side)
                if not chosen:
                    sides[side] = None
                    continue
                sources = [EpisodeSource(e.name, e.path, tuple(chosen[e.name])) for e in recordings if e.name in chosen]
                log.info("writing %s split: %d episodes from %d recordings", side, assignment.count(side), len(sources))
                merged = write_merged_dataset(sources, tmp / side, cache=cache)
                sides[side] = {"episodes": merged.episodes, "frames": merged.frames, "tasks": merged.tasks,
                               "lineage": [list(x) for x in merged.lineage]}
        manifest = _manifest(version, config, recordings, selection.skipped, assignment, sides)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            tmp.rename(root)  # a version dir exists only complete
        except OSError:
            if not (root / MANIFEST).exists():
                raise
            # another run built the same version meanwhile: identical inputs, so keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            manifest = json.loads((root / MANIFEST).read_text())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    point_latest(settings.splits_dir, version)
    return SplitResult(version, root, reused=False, manifest=manifest)


def _require_recordings_root(recordings_dir: Path, validation_dir: Path) -> None:
    """Refuse to build while the root is gone: every recording would be skipped as missing, a split on less data."""
    try:
        with os.scandir(recordings_dir) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        raise RecordingsRootError(
            f"{recordings_dir}: recordings root unavailable ({exc.strerror or exc}) — not building a split without "
            "its recordings; the previous split stays in place") from exc
    if empty and validation_dir.is_dir() and any(validation_dir.glob("*.json")):
        raise RecordingsRootError(
            f"{recordings_dir}: recordings root is empty but validation reports exist — is the mount missing? Not "
            "building a split without its recordings; the previous split stays in place")


def _refuse_inside_recordings(path: Path, recordings_dir: Path) -> None:
    if path.resolve().is_relative_to(recordings_dir.resolve()):
        raise ValueError(
            f"{path}: split output would be under the recordings root {recordings_dir} — the pipeline never writes "
            "there; set TATBOT_PIPELINE_HOME to a directory outside it"
        )


def _manifest(version: str, config: SplitConfig, recordings: list[RecordingEntry], skipped: dict[str, str],
              assignment: Assignment, sides: dict) -> dict:
    return {
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(config),
        "fps": recordings[0].fps,
        "stroke_length": recordings[0].stroke_length,
        "recordings": [
            {"name": e.name, "path": str(e.path), "fingerprint": content_id(e), "design": e.design, "scene": e.scene,
             "episodes_usable": list(e.episodes)}
            for e in recordings
        ],
        "designs": sorted({e.design for e in recordings}),
        "skipped": skipped,
        "excluded": {e.name: {str(ep): r for ep, r in sorted(e.excluded.items())} for e in recordings if e.excluded},
        "assignment": {"train": assignment.train, "val": assignment.val},
        "topped_up": assignment.topped_up,
        "sides": sides,
    }


def point_latest(splits_dir: Path, version: str) -> Path:
    """`splits/latest` -> <version> (atomic symlink swap), plus `splits/LATEST` holding the version as text.

    The text file is the fallback where symlinks fail (some network/Windows filesystems); `resolve_latest` reads it.
    """
    write_atomic(splits_dir / "LATEST", version + "\n")
    link = splits_dir / "latest"
    tmp = splits_dir / f".latest.tmp-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(version, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:
        log.warning("%s: symlink failed (%s); use %s or resolve_latest()", link, exc, splits_dir / "LATEST")
    return splits_dir / version


def resolve_latest(splits_dir: Path) -> Path:
    """The newest split version dir (holding train/ and val/)."""
    link = splits_dir / "latest"
    if link.is_dir():
        return link.resolve()
    pointer = splits_dir / "LATEST"
    if pointer.exists():
        return splits_dir / pointer.read_text().strip()
    raise FileNotFoundError(f"{splits_dir}: no split built yet — materialize `training_splits`")


def excluded_markdown(manifest: dict) -> str:
    """Excluded episodes and skipped recordings as a markdown table for the Dagster UI."""
    lines = ["| recording | episode | reason |", "|---|---|---|"]
    for name, reason in sorted(manifest["skipped"].items()):
        lines.append(f"| {name} | all | {_cell(reason)} |")
    for name, episodes in sorted(manifest["excluded"].items()):
        for ep, reasons in sorted(episodes.items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {name} | {ep} | {_cell('; '.join(reasons))} |")
    return "\n".join(lines) if len(lines) > 2 else "nothing excluded"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def split_changes(previous: dict | None, current: dict) -> dict:
    """What split manifest `current` holds that `previous` (an older one, or None) did not.

    An episode is identified by its recording, that recording's fingerprint and its source index, so a re-recorded
    or resumed session counts as changed and its episodes as new. This is the loop's "new since the previous
    checkpoint" when `previous` is the manifest of the split the previous checkpoint was trained on.
    """
    def episodes(manifest: dict, side: str) -> set[tuple]:
        fingerprints = {r["name"]: r.get("fingerprint") for r in manifest.get("recordings", [])}
        lineage = (manifest.get("sides", {}).get(side) or {}).get("lineage", [])
        return {(name, fingerprints.get(name), ep) for name, ep in lineage}

    before = {r["name"]: r.get("fingerprint") for r in (previous or {}).get("recordings", [])}
    now = {r["name"]: r.get("fingerprint") for r in current.get("recordings", [])}
    return {
        "previous_version": (previous or {}).get("version"),
        "version": current.get("version"),
        "new_recordings": sorted(n for n in now if n not in before),
        "changed_recordings": sorted(n for n in now if n in before and before[n] != now[n]),
        "removed_recordings": sorted(n for n in before if n not in now),
        "new_episodes": {side: len(episodes(current, side) - episodes(previous or {}, side)) for side in SIDES},
    }
