"""validate_recording: load a recording, run every rule, compute the verdict. The one entry point for the CLI and Dagster."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tatbot_pipeline.recordings.contents import load_recording
from tatbot_pipeline.recordings.convert import Conversion, converted_copy, needs_conversion
from tatbot_pipeline.recordings.validation_report import Finding, Severity, ValidationReport, verdict
from tatbot_pipeline.recordings.rules import RULES
from tatbot_pipeline.recordings.scan import content_fingerprint, recording_state
from tatbot_pipeline.recordings.summary import summarize

log = logging.getLogger(__name__)


def validate_recording(path: Path, settle_seconds: float = 60.0, now: float | None = None,
                       converted_dir: Path | None = None) -> ValidationReport:
    """Every finding about one recording and the resulting status. Never raises for a broken recording.

    With `converted_dir`, a LeRobot v2.1 recording is validated through its v3.0 copy there (made once with
    lerobot's converter, `recordings.convert`): the report's `path` is the copy, which the split then reads, and
    `summary.converted_from` names the original.
    """
    path = Path(path)
    now = time.time() if now is None else now
    target, pre = path, []
    if converted_dir is not None and needs_conversion(path):
        target, pre = _through_copy(path, Path(converted_dir), settle_seconds, now)
    rec = load_recording(target, settle_seconds, now)
    # When the copy could not be made (yet), `pre` says why; the original's own "v2.1: no place for the copy" would
    # contradict it.
    findings = pre + [f for f in rec.findings if not (pre and target == path and f.check == "format_version")]
    if not any(f.severity in (Severity.INCOMPLETE, Severity.ERROR) for f in pre) and not _stopped(findings):
        for name, check in RULES.items():
            try:
                findings.extend(check(rec))
            except Exception as e:  # boundary: a rule crashing on odd data is a finding, the others still run
                log.exception("rule %s crashed on %s", name, target)
                findings.append(Finding(name, Severity.ERROR, f"check crashed: {type(e).__name__}: {e}"))
    # Without an episodes table, the count info.json declares: the same number stroke_recording shows, all unusable.
    total = len(rec.episodes) if rec.episodes is not None else int((rec.info or {}).get("total_episodes") or 0)
    status, usable = verdict(findings, total)
    summary = {**summarize(rec), **rec.facts}
    if target != path:
        summary["converted_from"] = {"path": str(path), "codebase_version": "v2.1", "copy": str(target)}
    if rec.frames is not None:
        summary["action_ranges"] = {
            int(ep): [np.nanmin(a, axis=0).tolist(), np.nanmax(a, axis=0).tolist()]
            for ep in np.unique(rec.frames.episode_index)
            if len(a := rec.frames.action[rec.frames.episode(int(ep))]) and np.isfinite(a).any()
        }
    return ValidationReport(
        recording=path.name,
        path=str(target),
        status=status,
        episodes_total=total,
        episodes_usable=usable,
        findings=findings,
        # The robot's recording is the lineage anchor: a conversion of unchanged content keeps the fingerprint.
        fingerprint=content_fingerprint(path) if path.is_dir() else "",
        summary=summary,
    )


def _stopped(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.INCOMPLETE for f in findings)


def _through_copy(path: Path, converted_dir: Path, settle_seconds: float, now: float) -> tuple[Path, list[Finding]]:
    """The v3.0 copy to validate instead of a v2.1 recording, plus the finding that says so (or why not)."""
    if not recording_state(path).settled(settle_seconds, now):
        return path, [Finding("format_version", Severity.INCOMPLETE, "LeRobot v2.1 recording still changing — "
                              "converted once it has been quiet for the settle time")]
    try:
        conversion: Conversion = converted_copy(path, converted_dir)
    except Exception as e:  # boundary: the converter's failure becomes the verdict, with what to do
        log.exception("converting %s failed", path)
        return path, [Finding("format_version", Severity.ERROR, f"LeRobot v2.1 recording; converting a copy under "
                              f"{converted_dir} with lerobot's converter failed: {type(e).__name__}: {e}")]
    how = "reused" if conversion.reused else "made"
    return conversion.copy, [Finding("format_version", Severity.INFO, f"LeRobot v2.1 recording (tatbot before "
                                     f"2025-09-15): validated through its v3.0 copy {conversion.copy} ({how} with "
                                     "lerobot's converter; the original is untouched)")]
