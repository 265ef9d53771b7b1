"""The robot node's state dir (the arming file, the robot locks): a place only the robot's user controls.

Whoever can write there can arm the robot or hold its lock, so the dir and every file read from it must belong to
the user the rollout runs as and be writable by nobody else. Anything else is refused, never repaired: someone else
made it, and guessing whose it is would be guessing whether the robot may move. The refusal names no path (it may
reach a remote MCP caller); the node's log does.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


class UnsafeStateDir(RuntimeError):
    """The state dir or a file in it is owned by another user or writable by others."""


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) if missing; refuse it if another user owns it or others may write to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    check_private(path, os.lstat(path))
    return path


def check_private(path: Path, st: os.stat_result) -> None:
    """Raise UnsafeStateDir unless `st` (of `path`) is ours, not a symlink, and writable by us alone."""
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by this process's user (uid {os.geteuid()})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        log.error("robot state %s %s", path, problem)
        what = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        raise UnsafeStateDir(
            f"the robot node's state {what} ({Path(path).name}) {problem}: anyone who can write there could arm the "
            "robot or hold its lock, so nothing moves — the node's operator sets TATBOT_ROBOT_STATE_DIR to a dir only "
            "the robot's user can write (mode 0700), or removes the foreign one (the node's log names it)")
