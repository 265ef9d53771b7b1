"""Chunk inference off the control thread: LeRobot's RTC action queue, filled by a worker thread.

The control thread pops one action per tick and hands the worker every new observation; the worker decides from the
queue's level and the measured chunk latency (LeRobot's `LatencyTracker`) when to start the next chunk, and merges it
with LeRobot's `ActionQueue` in its RTC (replace) mode: the new chunk minus the actions executed while it was
computed. Flow-matching policies (SmolVLA, pi0) also get the old chunk's not-yet-executed actions to inpaint their
new chunk's prefix to (RTC); other policies (ACT) are replaced with the delay only.

Nothing here touches the robot: observing, checking and sending stay on the control thread (async_loop.py). A worker
that fails, or a queue that is empty at a tick, ends the rollout with a reason — the robot is never held on a stale
action or rushed through a late chunk.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from tatbot_pipeline.inference.loop import RolloutStopped
from tatbot_pipeline.policy.modes import delay_steps, trigger_remaining
from tatbot_pipeline.policy.loading import Chunk, ChunkSource, LoadedPolicy

log = logging.getLogger(__name__)

WORKER_THREAD_NAME = "tatbot-chunk-inference"
# How long stopping waits for a chunk in progress (it cannot be interrupted) before the robot is parked regardless.
MAX_JOIN_S = 5.0


class ChunkQueue:
    """LeRobot's `ActionQueue` (RTC replace mode) plus what exact merging needs: the delay is the number of actions
    popped since the observation the chunk was computed from, counted under one lock with the merge (LeRobot's
    example estimates it from the latency and only warns when it is off), and each merge starts a new generation so
    an observation from before a merge is never paired with the new chunk's positions."""

    def __init__(self) -> None:
        from lerobot.policies.rtc.action_queue import ActionQueue
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        # enabled=True selects the queue's replace-with-delay; its append mode would replay actions meant for the past.
        self._queue = ActionQueue(RTCConfig(enabled=True))
        self._lock = threading.Lock()
        self.generation = 0
        self.source: ChunkSource | None = None

    def pop(self) -> tuple[np.ndarray, ChunkSource] | None:
        with self._lock:
            action = self._queue.get()
            return None if action is None else (action.numpy(), self.source)

    def position(self) -> tuple[int, int, int]:
        """(generation, actions popped from the current chunk, actions left)."""
        with self._lock:
            return self.generation, self._queue.get_action_index(), self._queue.qsize()

    def left_over(self, generation: int, index: int) -> Any:
        """The current chunk's model-space actions from `index` on (what RTC inpaints to), None if there is none."""
        with self._lock:
            original = self._queue.original_queue
            if original is None or generation != self.generation:
                return None
            return original[index:]

    def put(self, chunk: Chunk, generation: int, index: int, number: int, latency_s: float) -> int:
        """Replace the queue with `chunk`, computed from the observation taken at (`generation`, `index`); returns the
        actions skipped (executed from the old chunk meanwhile)."""
        import torch

        with self._lock:
            if generation != self.generation:
                raise RuntimeError(f"chunk {number} was computed for queue generation {generation}, now {self.generation}")
            delay = self._queue.get_action_index() - index
            self._queue.merge(chunk.original, torch.from_numpy(chunk.actions), delay, index)
            self.generation += 1
            self.source = ChunkSource(number, latency_s, chunk.rtc_merged, delay)
            return delay


class ChunkWorker:
    """Computes the next chunk from the latest observation while the current one executes; a context manager that
    stops (and joins) the worker thread however the loop ends."""

    def __init__(self, policy: LoadedPolicy, task: str, fps: int, tracker: Any) -> None:
        self.policy, self.task, self.fps = policy, task, fps
        self.tracker = tracker  # lerobot LatencyTracker, seeded by the warm-up
        self.queue = ChunkQueue()
        self.chunks = 0
        self.error: Exception | None = None
        self.computing_since: float | None = None
        self._offered: tuple[dict[str, np.ndarray], int, int, int] | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=WORKER_THREAD_NAME, daemon=True)

    def __enter__(self) -> "ChunkWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self, frame: dict[str, np.ndarray]) -> None:
        """The first chunk, computed here before the loop's clock starts (the robot holds ready meanwhile); then the
        worker thread takes over."""
        self._compute(frame, 0, 0)
        self._thread.start()

    def offer(self, frame: dict[str, np.ndarray]) -> None:
        """The newest observation (taken right after a send); the worker uses it if the queue is low enough."""
        generation, index, left = self.queue.position()
        with self._wake:
            self._offered = (frame, generation, index, left)
            self._wake.notify()

    def pop(self, step: int) -> tuple[np.ndarray, ChunkSource]:
        """The action for this tick. Raises RolloutStopped when the worker failed or its chunk is late."""
        if self.error is not None:
            raise RolloutStopped(f"chunk inference failed ({type(self.error).__name__}: {self.error})")
        popped = self.queue.pop()
        if popped is None:
            since = self.computing_since
            running = f"the chunk in progress started {(time.perf_counter() - since) * 1000:.0f} ms ago" if since \
                else "no chunk in progress"
            raise RolloutStopped(
                f"no action ready for step {step + 1}: chunk inference fell behind the {self.fps} Hz control rate "
                f"({running}; slowest chunk so far {self.tracker.max() * 1000:.0f} ms) — stopped rather than hold or "
                "rush the arm; use a faster device or inference='sync'")
        return popped

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop and join the worker. A chunk being computed cannot be interrupted: wait for it, bounded."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s if timeout_s is not None else min(MAX_JOIN_S, max(1.0, 3 * self.tracker.max())))
            if self._thread.is_alive():
                log.warning("chunk inference still running after the rollout stopped; its chunk will be discarded")

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while self._offered is None and not self._stopping:
                        self._wake.wait()
                    if self._stopping:
                        return
                    (frame, generation, index, left), self._offered = self._offered, None
                stale = generation != self.queue.generation  # observed before the last merge: wait for a newer one
                if not stale and left <= trigger_remaining(self.tracker.max(), self.fps, self.policy.n_action_steps):
                    self._compute(frame, generation, index)
        except Exception as e:  # noqa: BLE001 - handed to the control thread, which stops the rollout with it
            log.exception("chunk inference failed")
            self.error = e

    def _compute(self, frame: dict[str, np.ndarray], generation: int, index: int) -> None:
        left_over = self.queue.left_over(generation, index) if self.policy.rtc_enabled else None
        self.computing_since = started = time.perf_counter()
        chunk = self.policy.chunk(frame, self.task, delay_steps(self.tracker.max(), self.fps), left_over)
        latency = time.perf_counter() - started
        self.tracker.add(latency)
        delay = self.queue.put(chunk, generation, index, self.chunks, latency)
        self.chunks += 1
        self.computing_since = None
        log.debug("chunk %d: %.1f ms, %d actions skipped, rtc=%s", self.chunks, latency * 1000, delay, chunk.rtc_merged)
