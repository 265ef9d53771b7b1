"""One rollout per robot across every process on the node: an `fcntl` lock file per robot.

`dagster job execute` runs `robot_eval` in-process, a lab may start two `tatbot-pipeline mcp` servers, and a run
queue's tag limits only see runs it launched, so the lock lives in the file system every process on the node
shares (`PipelineSettings.robot_state_dir`). The kernel drops an `flock` when its holder dies, so a crashed
rollout never blocks the next one; the file's text only says who holds it, for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path


class RobotBusy(RuntimeError):
    """Another rollout holds this robot."""


class RobotLock:
    """`with RobotLock(dir, "tatbot", owner="..."):` — non-blocking; raises RobotBusy naming the holder."""

    def __init__(self, state_dir: Path, robot: str, owner: str = "") -> None:
        self.path = Path(state_dir) / f"robot-{robot}.lock"
        self.robot = robot
        self.owner = owner
        self._fd: int | None = None
        self._mutex = threading.Lock()  # a supervisor may release the lock of a rollout stuck in another thread

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RobotBusy(f"another rollout is already running on the {self.robot} robot ({self.holder()}) — "
                            "wait for it or cancel it") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "owner": self.owner,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Idempotent: the worker's own `finally` and a supervisor that abandoned it may both call it."""
        with self._mutex:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """Who holds the lock, from the file (best effort: it is only for the message)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "holder unknown"
        who = f"pid {info.get('pid')} on {info.get('host')}"
        return f"{who}, {info['owner']}, since {info.get('since')}" if info.get("owner") else f"{who}, since {info.get('since')}"

    def __enter__(self) -> "RobotLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
