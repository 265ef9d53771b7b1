"""Validation reports for synthetic recordings, written the way `recording_validation` saves them."""

from __future__ import annotations

from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.recordings.validation_report import Finding, Severity, Status, ValidationReport


def write_report(settings: PipelineSettings, recording: Path, excluded: dict[int, str] | None = None,
                 status: Status | None = None, episodes: int = 4, summary: dict | None = None) -> ValidationReport:
    """Report for `recording`: episodes in `excluded` get an EXCLUDE finding with the given reason."""
    excluded = excluded or {}
    findings = [Finding("sleep_pose", Severity.EXCLUDE, reason, episode=ep) for ep, reason in excluded.items()]
    usable = [ep for ep in range(episodes) if ep not in excluded]
    status = status or (Status.WARN if excluded else Status.PASS)
    report = ValidationReport(
        recording=recording.name,
        path=str(recording),
        status=status,
        episodes_total=episodes,
        episodes_usable=usable if status in (Status.PASS, Status.WARN) else [],
        findings=findings,
        fingerprint=f"fp-{recording.name}",
        summary=summary or {},
    )
    report.save(settings.report_path(recording.name))
    return report


def rec_name(i: int, design: str = "tatbotlogo") -> str:
    return f"stroke-{design}-2025y-08m-09d-17h-{i:02d}m-00s"
