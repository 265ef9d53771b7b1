"""One rollout per robot across every process on the node: an `fcntl` lock file per robot.

`dagster job execute` runs `robot_eval` in-process, a lab may start two `tatbot-pipeline mcp` servers, and a run
queue's tag limits only see runs it launched, so the lock lives in the file system every process on the node
shares (`PipelineSettings.robot_state_dir`). The kernel drops an `flock` when its holder dies, so a crashed
rollout never blocks the next one; the file's text only says who holds it, for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from tatbot_pipeline.robot.state_dir import check_private, private_dir

log = logging.getLogger(__name__)

class RobotBusy(RuntimeError):
    """Another rollout holds this robot."""


class RobotLock:
    """`with RobotLock(dir, "tatbot", owner="..."):` — non-blocking; raises RobotBusy saying since when it is held.

    Who holds it (pid, host, what it runs) goes to the log only: the refusal may reach a remote MCP caller."""

    def __init__(self, state_dir: Path, robot: str, owner: str = "") -> None:
        self.path = Path(state_dir) / f"robot-{robot}.lock"
        self.robot = robot
        self.owner = owner
        self._fd: int | None = None
        self._mutex = threading.Lock()  # a supervisor may release the lock of a rollout stuck in another thread

    def acquire(self) -> None:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            check_private(self.path, os.fstat(fd))
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = self.holder_info()
            log.warning("%s robot busy: held by %s", self.robot, self.holder())
            since = f" (since {info['since']})" if info.get("since") else ""
            raise RobotBusy(f"another rollout is already running on the {self.robot} robot{since} — wait for it or "
                            "cancel it") from None
        except BaseException:
            os.close(fd)
            raise
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

    def holder_info(self) -> dict:
        """What the holder wrote into the file (best effort: it is only for messages)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def holder(self) -> str:
        """Who holds the lock, for the node's log and its own operator (pid, host, owner)."""
        info = self.holder_info()
        if not info:
            return "holder unknown"
        who = f"pid {info.get('pid')} on {info.get('host')}"
        return f"{who}, {info['owner']}, since {info.get('since')}" if info.get("owner") else f"{who}, since {info.get('since')}"

    def __enter__(self) -> "RobotLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
