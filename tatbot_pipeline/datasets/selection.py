"""Which recordings and episodes may go into a split: read from the validation reports, never re-judged here.

A partition whose validation checks failed still counts as "updated" for Dagster, so the split filters on the
report's status itself (DESIGN.md §3). Recordings that disagree on fps, stroke_length or features are refused
unless the user names a key to group them by: a policy trained on mixed chunk lengths silently learns garbage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tatbot_pipeline.lerobot_tables import read_episodes, read_info
from tatbot_pipeline.recordings.naming import parse_recording_name
from tatbot_pipeline.recordings.validation_report import Severity, Status, ValidationReport
from tatbot_pipeline.scene_yaml import load_scene

log = logging.getLogger(__name__)

GROUP_KEYS = ("stroke_length", "fps", "features", "signature")


@dataclass(frozen=True)
class RecordingEntry:
    """One usable recording as the split sees it: facts from its report, filled from the files where missing."""

    name: str
    path: Path
    fingerprint: str
    design: str
    scene: str
    fps: int
    stroke_length: int
    features: dict
    episodes: tuple[int, ...]  # usable, ascending
    excluded: dict[int, list[str]] = field(default_factory=dict)

    @property
    def features_id(self) -> str:
        """Short id of the feature set (dtype/shape/names; codec details ignored) for grouping and messages."""
        return hashlib.sha256(json.dumps(_comparable(self.features), sort_keys=True).encode()).hexdigest()[:8]

    def key(self, group_key: str) -> str:
        if group_key == "signature":
            return f"fps={self.fps},stroke_length={self.stroke_length},features={self.features_id}"
        if group_key == "features":
            return self.features_id
        return str(getattr(self, group_key))


@dataclass
class Selection:
    """The recordings a split is built from, plus what was left out and why (shown in the UI)."""

    recordings: list[RecordingEntry]
    skipped: dict[str, str] = field(default_factory=dict)  # recording -> reason


# Per-feature keys that may differ between recordings of one feature set: the video `info` block (codec, pix_fmt),
# and the `fps` that lerobot's v2.1 -> v3.0 converter adds to every non-video feature (the fork never writes it; the
# dataset's own fps is compared on its own).
_NOT_COMPARED = ("info", "fps")


def _comparable(features: dict) -> dict:
    """Features as LeRobot needs them equal to merge: dtype, shape and names."""
    return {k: {kk: vv for kk, vv in v.items() if kk not in _NOT_COMPARED} for k, v in sorted(features.items())}


def recording_facts(path: Path, summary: dict) -> dict:
    """fps, stroke_length, features, design_name, scene: from the report summary, else read from the recording.

    The validation summary normally carries these; reading the files as a fallback keeps the split independent
    of the summary's exact content.
    """
    facts = {k: summary.get(k) for k in ("fps", "stroke_length", "features", "design_name", "scene")}
    info = None
    if facts["fps"] is None or facts["features"] is None:
        info = read_info(path)
        facts["fps"] = facts["fps"] if facts["fps"] is not None else info["fps"]
        facts["features"] = facts["features"] if facts["features"] is not None else info["features"]
    scene = None
    if facts["stroke_length"] is None or facts["design_name"] is None:
        scene_path = path / "scene.yaml"
        scene = load_scene(scene_path) if scene_path.exists() else {}
        facts["design_name"] = facts["design_name"] or scene.get("design_name")
        if facts["stroke_length"] is None:
            facts["stroke_length"] = scene.get("stroke_length") or _longest_episode(path)
    if facts["scene"] is None:
        parsed = parse_recording_name(path.name)
        facts["scene"] = parsed.scene if parsed else (scene or {}).get("name", "unknown")
    facts["design_name"] = facts["design_name"] or facts["scene"]
    facts["fps"] = int(facts["fps"])
    facts["stroke_length"] = int(facts["stroke_length"])
    return facts


def _longest_episode(path: Path) -> int:
    return max(read_episodes(path, ["length"]).column("length").to_pylist())


def load_usable_recordings(validation_dir: Path) -> Selection:
    """Every recording whose report says pass/warn, with its usable episodes; the rest listed with the reason."""
    if not validation_dir.is_dir():
        raise FileNotFoundError(
            f"{validation_dir}: no validation reports — materialize `recording_validation` for the recordings first"
        )
    entries: list[RecordingEntry] = []
    skipped: dict[str, str] = {}
    for report_path in sorted(validation_dir.glob("*.json")):
        report = ValidationReport.load(report_path)
        if report.status is Status.EMPTY:  # a session with nothing recorded: not data, not a reason to report
            continue
        if not report.usable:
            errors = [f.message for f in report.findings if f.severity in (Severity.ERROR, Severity.INCOMPLETE)]
            detail = f": {'; '.join(errors[:2])}" if errors else ""
            skipped[report.recording] = f"validation status {report.status.value}{detail}"
            continue
        path = Path(report.path)
        if not (path / "meta" / "info.json").exists():
            skipped[report.recording] = f"{path}: recording missing (moved or deleted since validation)"
            continue
        if not report.episodes_usable:
            skipped[report.recording] = "no usable episodes"
            continue
        facts = recording_facts(path, report.summary)
        entries.append(
            RecordingEntry(
                name=report.recording,
                path=path,
                fingerprint=report.fingerprint,
                design=str(facts["design_name"]),
                scene=str(facts["scene"]),
                fps=facts["fps"],
                stroke_length=facts["stroke_length"],
                features=facts["features"],
                episodes=tuple(sorted(report.episodes_usable)),
                excluded=report.episodes_excluded,
            )
        )
    for name, reason in skipped.items():
        log.info("split skips %s: %s", name, reason)
    if not entries:
        raise ValueError(
            f"{validation_dir}: no usable recording among {len(skipped)} report(s) ({skipped}) — "
            "record or fix recordings, then re-run `recording_validation`"
        )
    return Selection(recordings=entries, skipped=skipped)


def check_compatible(selection: Selection, group_key: str = "", group_value: str = "") -> Selection:
    """Refuse recordings that disagree on fps/stroke_length/features, or keep one group of them.

    With `group_key` set, recordings are grouped by it and the group `group_value` (default: the one with the
    most usable episodes) is kept; the others are listed as skipped. The kept group must still agree on all three.
    """
    recordings = selection.recordings
    skipped = dict(selection.skipped)
    if group_key:
        if group_key not in GROUP_KEYS:
            raise ValueError(f"group_key={group_key!r}: use one of {GROUP_KEYS} (or '' to refuse mixed recordings)")
        groups: dict[str, list[RecordingEntry]] = defaultdict(list)
        for entry in recordings:
            groups[entry.key(group_key)].append(entry)
        if group_value:
            if group_value not in groups:
                raise ValueError(
                    f"group_value={group_value!r} matches no recording; {group_key} values: {sorted(groups)}"
                )
            chosen = group_value
        else:
            chosen = max(sorted(groups), key=lambda k: sum(len(e.episodes) for e in groups[k]))
        for value, members in groups.items():
            if value != chosen:
                for entry in members:
                    skipped[entry.name] = f"{group_key}={value}, split keeps {group_key}={chosen}"
        recordings = groups[chosen]
    for attr in ("fps", "stroke_length", "features"):
        values: dict[str, list[str]] = defaultdict(list)
        for entry in recordings:
            values[entry.key(attr)].append(entry.name)
        if len(values) > 1:
            detail = "; ".join(f"{attr}={v}: {', '.join(names)}" for v, names in sorted(values.items()))
            raise ValueError(
                f"recordings disagree on {attr} ({detail}) — refusing to merge them into one split. Set the run "
                f"config group_key to one of {GROUP_KEYS} to build the split from one group, or move the odd "
                "recordings out of the validation set"
            )
    return Selection(recordings=recordings, skipped=skipped)
