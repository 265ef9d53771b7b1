"""The eval dataset a rollout records: `vla-eval-{scene}-{timestamp}`, a LeRobot v3.0 dataset like a recording.

Same features as stroke_tool recordings (so the offline tooling reads it unchanged), one episode per rollout, plus
per step how the action came to be (`inference`: which chunk, how long it took to compute, whether RTC merged it,
how late the command went out) and what is needed to reproduce it: a scrubbed snapshot of the scene (`scene.yaml`) and the checkpoint path,
policy type, task, fps, the rollout's limits and what the loop measured (`meta/vla_eval.json`). It is finalized
however the rollout ends — after the robot is parked, since encoding takes seconds — and a rollout that recorded no
frame leaves no dataset behind (LeRobot cannot load an empty one).
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tatbot_pipeline.policy.loading import ChunkSource
from tatbot_pipeline.recordings.naming import TIME_FORMAT
from tatbot_pipeline.scene_yaml import scrub
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.spec import CAMERAS, ROBOT_TYPE, dataset_features

log = logging.getLogger(__name__)

EVAL_PREFIX = "vla-eval-"
EVAL_META = "meta/vla_eval.json"
# Per step, how its action came to be, beyond the recordings' features (inspect a rollout's chunk seams afterwards):
# the chunk that produced it (0 = the first), how long computing that chunk took, 1.0 when RTC merged it into the
# previous chunk (inpainting), how many of that chunk's first actions were skipped (executed from the previous chunk
# while it was computed), and how late the command went out after its tick. One float32 vector with named
# entries, like `action`: LeRobot stores a shape-(1,) feature as a scalar column, which numpy 2 cannot fill.
INFERENCE_KEY = "inference"
INFERENCE_NAMES = ["chunk_index", "chunk_latency_s", "rtc_merged", "chunk_skipped_steps", "send_late_s"]


def eval_dataset_name(scene: str, at: datetime) -> str:
    return f"{EVAL_PREFIX}{scene}-{at.strftime(TIME_FORMAT)}"


def _unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`… when rollouts start within the same second (names have 1 s resolution)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


class EvalRecorder:
    """Context manager around a LeRobotDataset; `add` one frame per control step."""

    def __init__(
        self,
        root: Path,
        scene: RobotScene,
        cameras: dict[str, tuple[int, int]],
        fps: int,
        info: dict[str, Any],
        at: datetime | None = None,
    ) -> None:
        self.path = _unused(Path(root) / eval_dataset_name(scene.name, at or datetime.now()))
        self.scene = scene
        self.cameras = cameras
        self.fps = fps
        self.info = dict(info)
        self.frames = 0
        self._dataset: Any = None

    def __enter__(self) -> "EvalRecorder":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def saved(self) -> bool:
        """Whether closing left a dataset (at least one frame recorded)."""
        return self.frames > 0

    def open(self) -> "EvalRecorder":
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists — eval datasets are never overwritten")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shapes = set(self.cameras.values())
        if len(shapes) > 1:
            raise ValueError(f"cameras of different sizes {self.cameras}: recordings keep one image shape for all cameras")
        if self.cameras and set(self.cameras) - set(CAMERAS):
            raise ValueError(f"cameras {sorted(self.cameras)}: recordings only know {list(CAMERAS)}")
        features = dataset_features(bool(self.cameras), next(iter(shapes)) if shapes else (0, 0))
        # Recordings always have both cameras when they have any; record only those the robot delivers.
        features = {k: v for k, v in features.items() if not k.startswith("observation.images.")
                    or k.removeprefix("observation.images.") in self.cameras}
        features[INFERENCE_KEY] = {"dtype": "float32", "shape": (len(INFERENCE_NAMES),), "names": INFERENCE_NAMES}
        self._dataset = LeRobotDataset.create(
            f"tatbot/{self.path.name}", fps=self.fps, root=self.path, robot_type=ROBOT_TYPE,
            features=features, use_videos=True,
            # stroke_tool's setting: PNG writes off the control loop's thread, 4 writers per camera.
            image_writer_threads=4 * len(self.cameras),
        )
        return self

    def add(self, frame: dict[str, np.ndarray], action: np.ndarray, task: str, source: ChunkSource | None = None,
            send_late_s: float = 0.0) -> None:
        """One step: the observation read before the command, the action actually sent (after the safety envelope),
        the chunk it came from and how late it was sent."""
        source = source or ChunkSource(-1, float("nan"), rtc_merged=False)
        inference = np.array([source.index, source.latency_s, source.rtc_merged, source.delay_steps, send_late_s],
                             dtype=np.float32)
        self._dataset.add_frame({**frame, "action": np.asarray(action, dtype=np.float32), "task": task,
                                 INFERENCE_KEY: inference})
        self.frames += 1

    def close(self, **outcome: Any) -> None:
        """Save the episode and finalize; `outcome` (what the loop measured) goes into meta/vla_eval.json."""
        if self._dataset is None:
            return
        self.info.update(outcome)
        if not self.frames:
            self._dataset.finalize()  # also stops the image writer's threads
            self._dataset = None
            shutil.rmtree(self.path, ignore_errors=True)  # our own empty skeleton, never a recording
            log.info("eval dataset %s: no frame recorded, nothing kept", self.path)
            return
        try:
            # Cameras one after the other: lerobot's parallel encoding forks a process pool from this process, whose
            # server, chunk and image-writer threads make a fork unsafe (Python 3.12 warns: "may lead to deadlocks").
            self._dataset.save_episode(parallel_encoding=False)
        finally:
            self._dataset.finalize()  # also stops the image writer's threads
            self._dataset = None
            self._write_meta()

    def _write_meta(self) -> None:
        (self.path / "scene.yaml").write_text(yaml.safe_dump(scrub(self.scene.data), sort_keys=False))
        meta = {**self.info, "scene": self.scene.name, "scene_source": str(self.scene.source or "built-in"),
                "fps": self.fps, "frames": self.frames}
        (self.path / EVAL_META).write_text(json.dumps(meta, indent=2, default=str))
        log.info("eval dataset %s: %d frames", self.path, self.frames)
