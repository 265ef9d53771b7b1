"""The operator arms the robot, at the robot: hardware rollouts run only while the node is armed.

tatbot's plan says "always verify the robot is clear to move before inference runs". A misclick in the UI, a stray
`dagster job execute` or a replayed MCP call can come from anywhere; arming can only come from a shell on the robot
node (`tatbot-pipeline arm --minutes 10`), from the person who looked at the robot. Arming is a small JSON file in
the node's robot state dir with an expiry and the kernel's boot id, so it lapses by itself and with a reboot;
`tatbot-pipeline arm --off` ends it early, and a running rollout checks it every step, so disarming stops it too.
The state dir and the file must be the robot user's alone (state_dir.py): an arming file anyone could write is no
arming at all.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tatbot_pipeline.files import write_atomic
from tatbot_pipeline.robot.state_dir import check_private, private_dir

ARMING_FILE = "armed.json"
MAX_ARM_MINUTES = 120.0
HOW_TO_ARM = "an operator at the robot runs `tatbot-pipeline arm --minutes 10` on the robot node after checking it is clear to move"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class NotArmed(RuntimeError):
    """A hardware rollout was asked for while the node is not armed."""


@dataclass(frozen=True)
class Arming:
    by: str  # user@host, and the ssh client when armed over ssh
    at: float  # unix time
    until: float
    boot: str = ""  # the kernel's boot id when armed: a reboot ends arming

    def describe(self) -> str:
        return f"armed by {self.by} at {_clock(self.at)} until {_clock(self.until)}"


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:  # not Linux: expiry alone ends arming
        return ""


def operator() -> str:
    """Who is arming: user@host, plus the ssh client address when the shell came in over ssh."""
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return f"{who} (ssh from {ssh[0]})" if ssh else who


def arm(state_dir: Path, minutes: float, by: str | None = None, now: float | None = None) -> Arming:
    if not (0 < minutes <= MAX_ARM_MINUTES):
        raise ValueError(f"arm for more than 0 and at most {MAX_ARM_MINUTES:g} minutes, not {minutes:g}")
    now = time.time() if now is None else now
    arming = Arming(by=by or operator(), at=now, until=now + 60 * minutes, boot=boot_id())
    write_atomic(private_dir(state_dir) / ARMING_FILE, json.dumps(asdict(arming)))
    return arming


def disarm(state_dir: Path) -> bool:
    """End arming now. True when the node was armed."""
    try:
        (Path(state_dir) / ARMING_FILE).unlink()
        return True
    except FileNotFoundError:
        return False


def current(state_dir: Path, now: float | None = None) -> Arming | None:
    """The arming in force; None when not armed, expired, armed before the last reboot, or the file is unreadable
    (never guess: not armed). Raises UnsafeStateDir when the dir or the file is not the robot user's alone."""
    path = private_dir(state_dir) / ARMING_FILE
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as f:
            check_private(path, os.fstat(f.fileno()))
            data = json.loads(f.read())
        arming = Arming(by=str(data["by"]), at=float(data["at"]), until=float(data["until"]),
                        boot=str(data.get("boot", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    return arming if arming.at <= now < arming.until and arming.boot == boot_id() else None


def require_armed(state_dir: Path, now: float | None = None) -> Arming:
    arming = current(state_dir, now)
    if arming is None:
        raise NotArmed(f"the robot node is not armed, so nothing moves — {HOW_TO_ARM}")
    return arming
