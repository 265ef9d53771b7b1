"""Recording directory names as tatbot's stroke_tool makes them: `stroke-<scene>-<YYYY>y-<MM>m-<DD>d-<HH>h-<MM>m-<SS>s`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

PREFIX = "stroke-"
# tatbot.utils.log.TIME_FORMAT
TIME_FORMAT = "%Yy-%mm-%dd-%Hh-%Mm-%Ss"
_NAME_RE = re.compile(r"^stroke-(?P<scene>.+)-(?P<ts>\d{4}y-\d{2}m-\d{2}d-\d{2}h-\d{2}m-\d{2}s)$")


@dataclass(frozen=True)
class RecordingName:
    scene: str
    recorded_at: datetime

    def __str__(self) -> str:
        return recording_dir_name(self.scene, self.recorded_at)


def recording_dir_name(scene: str, recorded_at: datetime) -> str:
    return f"{PREFIX}{scene}-{recorded_at.strftime(TIME_FORMAT)}"


def parse_recording_name(name: str) -> RecordingName | None:
    """Scene and timestamp of a recording dir name, or None when the name is not a stroke recording."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    try:
        recorded_at = datetime.strptime(match["ts"], TIME_FORMAT)
    except ValueError:
        return None
    return RecordingName(scene=match["scene"], recorded_at=recorded_at)
