"""validate_recording: load a recording, run every rule, compute the verdict. The one entry point for the CLI and Dagster."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from tatbot_pipeline.recordings.contents import load_recording
from tatbot_pipeline.recordings.report import Finding, Severity, ValidationReport, verdict
from tatbot_pipeline.recordings.rules import RULES
from tatbot_pipeline.recordings.scan import content_fingerprint
from tatbot_pipeline.recordings.summary import summarize

log = logging.getLogger(__name__)


def validate_recording(path: Path, settle_seconds: float = 60.0, now: float | None = None) -> ValidationReport:
    """Every finding about one recording and the resulting status. Never raises for a broken recording."""
    path = Path(path)
    now = time.time() if now is None else now
    rec = load_recording(path, settle_seconds, now)
    findings = list(rec.findings)
    if not any(f.severity is Severity.INCOMPLETE for f in findings):
        for name, check in RULES.items():
            try:
                findings.extend(check(rec))
            except Exception as e:  # boundary: a rule crashing on odd data is a finding, the others still run
                log.exception("rule %s crashed on %s", name, path)
                findings.append(Finding(name, Severity.ERROR, f"check crashed: {type(e).__name__}: {e}"))
    total = len(rec.episodes) if rec.episodes is not None else 0
    status, usable = verdict(findings, total)
    fingerprint = content_fingerprint(path) if path.is_dir() else ""
    summary = summarize(rec)
    if rec.frames is not None:
        summary["action_ranges"] = {
            int(ep): [np.nanmin(a, axis=0).tolist(), np.nanmax(a, axis=0).tolist()]
            for ep in np.unique(rec.frames.episode_index)
            if len(a := rec.frames.action[rec.frames.episode(int(ep))]) and np.isfinite(a).any()
        }
    return ValidationReport(
        recording=path.name,
        path=str(path),
        status=status,
        episodes_total=total,
        episodes_usable=usable,
        findings=findings,
        fingerprint=fingerprint,
        summary=summary,
    )
