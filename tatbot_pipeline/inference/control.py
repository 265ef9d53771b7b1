"""How the world outside a rollout stops it: a stop request with a reason, and, when stopping hangs, abandonment.

A rollout runs in a worker thread; whoever supervises it (the MCP server, a test) holds its `RolloutControl`. A stop
request (cancel, a client gone, the server shutting down) is seen by the loop at its next step. If the worker does
not finish within the cancel timeout — a driver call hung — the supervisor abandons it: its robot handle is revoked
(nothing it still sends reaches the arms) and its robot lock released, so the robot is not held by a dead rollout.
"""

from __future__ import annotations

import threading

from tatbot_pipeline.robot.guard import GuardedRobot
from tatbot_pipeline.robot.lock import RobotLock


class RolloutControl:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._guard = threading.Lock()
        self.reason: str | None = None
        self.done = threading.Event()  # set by the worker when it returns, parked or not
        self.abandoned: str | None = None
        self._robot: GuardedRobot | None = None
        self._lock: RobotLock | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the rollout to stop and park; the first reason is the one reported."""
        with self._guard:
            if self.reason is None:
                self.reason = reason
        self._event.set()

    @property
    def stop_requested(self) -> bool:
        return self._event.is_set()

    def attach(self, robot: GuardedRobot | None = None, lock: RobotLock | None = None) -> None:
        """What to revoke and release if this rollout has to be abandoned."""
        with self._guard:
            if robot is not None:
                self._robot = robot
                if self.abandoned:
                    robot.revoke(self.abandoned)
            if lock is not None:
                self._lock = lock

    def wait(self, timeout_s: float) -> bool:
        """Wait for the worker to finish; True when it did."""
        return self.done.wait(timeout_s)

    def abandon(self, reason: str) -> None:
        """The worker is stuck: revoke its robot and release its lock so the robot is free again."""
        with self._guard:
            self.abandoned = reason
            robot, lock = self._robot, self._lock
        self._event.set()
        if robot is not None:
            robot.revoke(reason)
        if lock is not None:
            lock.release()
