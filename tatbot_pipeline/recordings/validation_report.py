"""The validation verdict of one recording: findings collected from every rule, status computed in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from tatbot_pipeline.display import shorten_paths
from tatbot_pipeline.files import write_atomic


class Status(str, Enum):
    PASS = "pass"  # every episode usable
    WARN = "warn"  # usable, but episodes were excluded or anomalies logged
    FAIL = "fail"  # recording unusable
    INCOMPLETE = "incomplete"  # still being written (or unfinalized and recently touched)
    EMPTY = "empty"  # a session dir with nothing recorded (the robot never connected): nothing to use, nothing wrong


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"  # worth a look; nothing excluded
    EXCLUDE = "exclude"  # the episode it names is excluded from training
    ERROR = "error"  # the recording is unusable
    INCOMPLETE = "incomplete"  # not finished yet; check again later
    EMPTY = "empty"  # no episodes were ever recorded here


_ORDER = [Severity.INCOMPLETE, Severity.EMPTY, Severity.ERROR, Severity.EXCLUDE, Severity.WARNING, Severity.INFO]


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str
    episode: int | None = None

    def to_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity.value, "episode": self.episode, "message": self.message}

    @property
    def name(self) -> str:
        """What a person calls this finding in a one-line summary ("dead arm"); the check id stays in the table."""
        if self.check == "cameras" and "black" in self.message:
            return "black camera"
        return FINDING_NAMES.get(self.check, self.check.replace("_", " "))


# The checks' findings by what they mean on the robot; the recorder's own log lines back up a specific finding.
LOG_FINDING = "recorder error logged"
FINDING_NAMES = {
    "cameras": "camera failure", "dead_arm": "dead arm", "episode_logs": LOG_FINDING, "finite": "NaN/inf values",
    "fps": "timestamp gaps", "metadata": "broken frame index", "stroke_length": "wrong stroke length",
    "strokebatch": "stroke plan mismatch", "urdf_limits": "joints past their limits",
    "orphans": "stroke dir never saved",
}


@dataclass
class ValidationReport:
    recording: str
    path: str
    status: Status
    episodes_total: int
    episodes_usable: list[int]
    findings: list[Finding] = field(default_factory=list)
    fingerprint: str = ""
    summary: dict = field(default_factory=dict)  # facts about the recording (fps, stroke_length, features, ...)

    @property
    def usable(self) -> bool:
        return self.status in (Status.PASS, Status.WARN)

    @property
    def failed(self) -> bool:
        """Broken or unfinished data: the partition fails. An empty session is neither usable nor failed."""
        return self.status in (Status.FAIL, Status.INCOMPLETE)

    @property
    def episodes_excluded(self) -> dict[int, list[str]]:
        """Excluded episode -> the reasons, for tables and split metadata."""
        out: dict[int, list[str]] = {}
        for f in self.findings:
            if f.severity is Severity.EXCLUDE and f.episode is not None:
                out.setdefault(f.episode, []).append(f"{f.check}: {f.message}")
        return out

    @property
    def first_reason(self) -> str:
        """The finding that decided a fail/incomplete/empty verdict (the most severe, first found)."""
        blocking = sorted((f for f in self.findings if f.severity in (Severity.ERROR, Severity.INCOMPLETE, Severity.EMPTY)),
                          key=lambda f: _ORDER.index(f.severity))
        return blocking[0].message if blocking else ""

    def headline(self) -> str:
        """One line for the UI: 'WARN 4/6 usable: ep 1 dead arm, ep 4 black camera' or 'FAIL: <first reason>'."""
        verdict = self.status.value.upper()
        if self.status is Status.EMPTY:
            return f"{verdict}: {self.first_reason}"
        if not self.usable:
            return f"{verdict} 0/{self.episodes_total} usable: {self.first_reason[:200]}"
        head = f"{verdict} {len(self.episodes_usable)}/{self.episodes_total} usable"
        names = self.excluded_names()
        if names:
            return head + ": " + ", ".join(f"ep {ep} {' + '.join(n)}" for ep, n in sorted(names.items()))
        warning = next((f for f in self.findings if f.severity is Severity.WARNING), None)
        return head if warning is None else f"{head}: {warning.name}: {warning.message[:120]}"

    def excluded_names(self) -> dict[int, list[str]]:
        """Excluded episode -> what a person calls why ('dead arm', 'black camera'): the headline's and the joint-range
        plot's words, where `episodes_excluded` has the checks' messages."""
        names: dict[int, list[str]] = {}
        for f in self.findings:
            if f.severity is Severity.EXCLUDE and f.episode is not None and f.name not in names.get(f.episode, []):
                names.setdefault(f.episode, []).append(f.name)
        return {ep: _specific(n) for ep, n in names.items()}

    def findings_markdown(self) -> str:
        """The findings as a markdown table for the Dagster UI, three columns narrow enough for the asset page's
        pane at 1600 px: episode, `severity check` (one word each, stacked), message (paths cut to their last part:
        the report file has them whole)."""
        if not self.findings:
            return "No findings: every check passed."
        rows = ["| ep | finding | message |", "|---|---|---|"]
        for f in sorted(self.findings, key=lambda f: (_ORDER.index(f.severity), f.episode if f.episode is not None else -1)):
            msg = shorten_paths(f.message).replace("|", "\\|").replace("\n", " ")
            rows.append(f"| {'' if f.episode is None else f.episode} | {f.severity.value} {f.check} | {msg} |")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["findings"] = [f.to_dict() for f in self.findings]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ValidationReport":
        findings = [
            Finding(f["check"], Severity(f["severity"]), f["message"], f.get("episode")) for f in d.get("findings", [])
        ]
        return cls(
            recording=d["recording"],
            path=d["path"],
            status=Status(d["status"]),
            episodes_total=d["episodes_total"],
            episodes_usable=list(d["episodes_usable"]),
            findings=findings,
            fingerprint=d.get("fingerprint", ""),
            summary=d.get("summary", {}),
        )

    def save(self, path: Path) -> Path:
        return write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "ValidationReport":
        return cls.from_dict(json.loads(path.read_text()))


def verdict(findings: list[Finding], episodes_total: int) -> tuple[Status, list[int]]:
    """Status and usable episodes from the findings: the one place where findings become a decision."""
    severities = {f.severity for f in findings}
    if Severity.INCOMPLETE in severities:
        return Status.INCOMPLETE, []
    if Severity.EMPTY in severities:
        return Status.EMPTY, []
    if Severity.ERROR in severities:
        return Status.FAIL, []
    excluded = {f.episode for f in findings if f.severity is Severity.EXCLUDE and f.episode is not None}
    usable = [ep for ep in range(episodes_total) if ep not in excluded]
    if not usable:
        return Status.FAIL, []
    if excluded or Severity.WARNING in severities:
        return Status.WARN, usable
    return Status.PASS, usable


def _specific(names: list[str]) -> list[str]:
    """An episode's finding names without the log line when a specific finding says what failed."""
    return [n for n in names if n != LOG_FINDING] or names
