"""Dataset writers for synthetic recordings, one per recorder era, all fed the same frames by `synth`.

tatbot records with its own LeRobot fork (hu-po/lerobot, lerobot 0.3.4), which cannot be installed next to the
lerobot 0.6.1 this project runs on. Its writing steps are reproduced here on top of lerobot 0.6.1's own building
blocks (feature validation, stats, video encoding and concatenation, stats/tasks writers), following the fork's
`save_episode` line by line; tests/fixtures holds small recordings written by the fork itself to compare against.
info.json stays a plain dict written as the fork writes it: 0.6.1's typed `DatasetInfo` drops the v2.1 keys
(`total_videos`, `total_chunks`) the fork wrote.

- `ForkV30Writer` — the fork since 2025-09-15 (LeRobot v3.0). No `finalize()`: after *every* episode it rewrites the
  data parquet, the episodes parquet, info.json and stats.json completely (pandas `to_parquet`, so list columns are
  `list<double>` and the stats carry no quantiles), and appends the episode's video to `file-000.mp4`. A session
  stopped after k strokes is therefore a complete k-episode dataset, and a resumed session appends to the same files.
- `ForkV21Writer` — the fork before 2025-09-15 (LeRobot v2.1): one parquet and one mp4 per episode, jsonl metadata;
  `episodes.jsonl` carries stroke_tool's `episode_cond` as `condition`.
- `LeRobotWriter` — upstream lerobot itself (buffered parquet writers, complete only after `finalize()`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def fork_video_info(info: dict) -> dict:
    """lerobot's video info as the fork (0.3.4) names it: `video.is_depth_map`, which 0.6.1 calls `is_depth_map`."""
    return {("video.is_depth_map" if k == "is_depth_map" else k): v for k, v in info.items()}


class DatasetWriter(Protocol):
    """What stroke_tool asks of its LeRobotDataset: frames in, one episode per stroke, nothing at the end (fork)."""

    def add_frame(self, frame: dict) -> None: ...

    def save_episode(self, episode_cond: dict) -> None: ...

    def close(self) -> None: ...

    @property
    def num_episodes(self) -> int: ...


class _ForkBase:
    """Shared by both fork eras: the info.json of a new dataset, the episode buffer and per-frame images."""

    # The image writer's scratch files (upstream lerobot's naming, which its encoder globs for; the v2.1 fork used
    # `episode_NNNNNN/frame_NNNNNN.png`). Both eras leave the emptied images/<camera>/ dirs behind.
    image_path = "images/{image_key}/episode-{episode_index:06d}/frame-{frame_index:06d}.png"

    def __init__(self, root: Path, features: dict, fps: int, robot_type: str, vcodec: str, resume: bool) -> None:
        from lerobot.utils.constants import DEFAULT_FEATURES

        self.root = Path(root)
        self.fps = fps
        self.vcodec = vcodec
        if not resume:
            self.root.mkdir(parents=True, exist_ok=True)
            self.info = self._new_info({**features, **DEFAULT_FEATURES}, fps, robot_type)
            self._write_info()
        self.info = json.loads((self.root / "meta" / "info.json").read_text())
        for ft in self.info["features"].values():  # shapes as tuples, the way LeRobotDatasetMetadata holds them
            ft["shape"] = tuple(ft["shape"])
        self.features = self.info["features"]
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.buffer: dict[str, list] = {}

    def _new_info(self, features: dict, fps: int, robot_type: str) -> dict:
        raise NotImplementedError

    @property
    def num_episodes(self) -> int:
        return int(self.info["total_episodes"])

    def _write_info(self) -> None:
        """The fork's `write_info`: the dict as JSON, indent 4, shapes as lists."""
        info = {**self.info, "features": {k: {**ft, "shape": list(ft["shape"])} for k, ft in self.info["features"].items()}}
        path = self.root / "meta" / "info.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=4, ensure_ascii=False))

    def add_frame(self, frame: dict) -> None:
        """`LeRobotDataset.add_frame`: validate, buffer, and write camera frames as PNGs under images/."""
        from lerobot.datasets.image_writer import write_image
        from lerobot.datasets.feature_utils import validate_frame

        validate_frame(frame, self.features)
        t = len(self.buffer.get("frame_index", []))
        row = {"frame_index": t, "timestamp": t / self.fps, "task": frame["task"]}
        for key, value in frame.items():
            if key in self.video_keys:
                path = self.root / self.image_path.format(image_key=key, episode_index=self.num_episodes, frame_index=t)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_image(value, path)
                value = str(path)
            if key != "task":
                row[key] = value
        for key, value in row.items():
            self.buffer.setdefault(key, []).append(value)

    def _episode_arrays(self, task_index: dict[str, int], first_index: int) -> tuple[dict, int, list[str]]:
        """The buffer as lerobot's `save_episode` shapes it before computing stats and writing the table."""
        buf, self.buffer = self.buffer, {}
        n = len(buf["frame_index"])
        tasks = buf.pop("task")
        buf["index"] = np.arange(first_index, first_index + n)
        buf["episode_index"] = np.full((n,), self.num_episodes)
        buf["task_index"] = np.array([task_index[t] for t in tasks])
        buf["timestamp"] = np.asarray(buf["timestamp"], dtype=np.float32)
        # In feature order, as the fork's episode buffer is: stats and their columns come out in that order.
        out = {k: buf[k] if k in self.video_keys else np.stack(buf[k]) for k in self.features}
        return out, n, list(dict.fromkeys(tasks))

    def _episode_stats(self, arrays: dict) -> dict:
        """The fork's `compute_episode_stats`: plain numpy min/max/mean/std/count (upstream lerobot adds quantiles and
        computes std through a running histogram), images sampled as lerobot samples them and scaled to [0, 1]."""
        from lerobot.datasets.compute_stats import sample_images

        stats = {}
        for key, data in arrays.items():
            image = key in self.video_keys
            values = sample_images(data) if image else data
            axis, keep = ((0, 2, 3), True) if image else (0, data.ndim == 1)
            ft = {"min": np.min(values, axis=axis, keepdims=keep), "max": np.max(values, axis=axis, keepdims=keep),
                  "mean": np.mean(values, axis=axis, keepdims=keep), "std": np.std(values, axis=axis, keepdims=keep),
                  "count": np.array([len(values)])}
            stats[key] = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in ft.items()} if image else ft
        return stats

    def _table(self, arrays: dict):
        """The frames as the HF dataset the fork builds (`Dataset.from_dict(..., features=hf_features)`)."""
        import datasets
        from lerobot.datasets.feature_utils import get_hf_features_from_features

        hf_features = get_hf_features_from_features(self.features)
        return datasets.Dataset.from_dict({k: arrays[k] for k in hf_features}, features=hf_features, split="train")

    def _encode(self, key: str, episode: int, out: Path) -> None:
        from lerobot.configs.video import RGBEncoderConfig
        from lerobot.datasets.video_utils import encode_video_frames

        img_dir = (self.root / self.image_path.format(image_key=key, episode_index=episode, frame_index=0)).parent
        out.parent.mkdir(parents=True, exist_ok=True)
        encode_video_frames(img_dir, out, self.fps, RGBEncoderConfig(vcodec=self.vcodec), overwrite=True)
        shutil.rmtree(img_dir)

    def close(self) -> None:
        """The fork has no finalize(): whatever the last save_episode wrote is the recording."""


class ForkV30Writer(_ForkBase):
    """hu-po/lerobot `LeRobotDataset.save_episode` since the v3.0 merge of 2025-09-15 (see module docstring)."""

    def _new_info(self, features: dict, fps: int, robot_type: str) -> dict:
        from lerobot.datasets.feature_utils import create_empty_dataset_info

        return create_empty_dataset_info("v3.0", fps, features, True, robot_type, video_files_size_in_mb=500).to_dict()

    def save_episode(self, episode_cond: dict) -> None:  # noqa: ARG002 - the v3.0 fork accepts and drops it
        from lerobot.utils.utils import flatten_dict

        tasks = self._update_tasks()
        ep = self.num_episodes
        arrays, n, ep_tasks = self._episode_arrays(tasks, self.info["total_frames"])
        stats = self._episode_stats(arrays)
        start = self.info["total_frames"]
        row = {"episode_index": ep, "tasks": ep_tasks, "length": n, "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": start, "dataset_to_index": start + n}
        self._append_data(arrays)
        for key in self.video_keys:
            row.update(self._append_video(key, ep))
        row.update(flatten_dict({"stats": stats}))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        self._append_episode_row(row)
        self.info.update(total_episodes=ep + 1, total_frames=start + n, total_tasks=len(tasks), splits={"train": f"0:{ep + 1}"})
        self._write_info()
        self._write_stats(stats)

    def _update_tasks(self) -> dict[str, int]:
        """meta/tasks.parquet gains the new task strings (index = task, column task_index), rewritten in place."""
        import pandas as pd
        from lerobot.datasets.io_utils import write_tasks

        path = self.root / "meta" / "tasks.parquet"
        tasks = pd.read_parquet(path) if path.exists() else pd.DataFrame({"task_index": []}, index=[])
        new = [t for t in dict.fromkeys(self.buffer["task"]) if t not in tasks.index]
        if new or not path.exists():
            tasks = pd.concat([tasks, pd.DataFrame({"task_index": range(len(tasks), len(tasks) + len(new))}, index=new)])
            tasks["task_index"] = tasks["task_index"].astype("int64")
            write_tasks(tasks, self.root)
        return {str(t): int(i) for t, i in tasks["task_index"].items()}

    def _append_data(self, arrays: dict) -> None:
        """`_save_episode_data`: the whole data file read back, concatenated with the episode, written again."""
        import pandas as pd

        df = pd.DataFrame(self._table(arrays))
        path = self.root / "data" / "chunk-000" / "file-000.parquet"
        if path.exists():
            df = pd.concat([pd.read_parquet(path), df], ignore_index=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path)

    def _append_video(self, key: str, ep: int) -> dict:
        """`_save_episode_video`: encode the episode, then append it to the camera's file-000.mp4."""
        from lerobot.datasets.video_utils import concatenate_video_files, get_video_duration_in_s, get_video_info

        tmp = Path(tempfile.mkdtemp(dir=self.root)) / f"{key}_{ep:03d}.mp4"
        self._encode(key, ep, tmp)
        duration = get_video_duration_in_s(tmp)
        video = self.root / "videos" / key / "chunk-000" / "file-000.mp4"
        start = 0.0
        if video.exists():
            start = get_video_duration_in_s(video)
            concatenate_video_files([video, tmp], video)
        else:
            video.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(tmp), str(video))
        shutil.rmtree(tmp.parent)
        if ep == 0:
            self.info["features"][key]["info"] = fork_video_info(get_video_info(video))
        prefix = f"videos/{key}/"
        return {f"{prefix}chunk_index": 0, f"{prefix}file_index": 0, f"{prefix}from_timestamp": start,
                f"{prefix}to_timestamp": start + duration}

    def _append_episode_row(self, row: dict) -> None:
        """`_save_episode_metadata`: one-row HF dataset -> pandas, concatenated onto the episodes file, rewritten."""
        import datasets
        import pandas as pd

        df = pd.DataFrame(datasets.Dataset.from_dict({k: [v] for k, v in row.items()}))
        path = self.root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        if path.exists():
            df = pd.concat([pd.read_parquet(path), df], ignore_index=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)

    def _write_stats(self, episode: dict) -> None:
        from lerobot.datasets.compute_stats import aggregate_stats
        from lerobot.datasets.io_utils import load_stats, write_stats

        old = load_stats(self.root)
        write_stats(aggregate_stats([old, episode]) if old else episode, self.root)


class ForkV21Writer(_ForkBase):
    """hu-po/lerobot before 2025-09-15 (LeRobot v2.1): per-episode files, jsonl metadata, `condition` per episode."""

    def _new_info(self, features: dict, fps: int, robot_type: str) -> dict:
        return {"codebase_version": "v2.1", "robot_type": robot_type, "total_episodes": 0, "total_frames": 0,
                "total_tasks": 0, "total_videos": 0, "total_chunks": 0, "chunks_size": 1000, "fps": fps, "splits": {},
                "data_path": V21_DATA_PATH, "video_path": V21_VIDEO_PATH, "features": features}

    def save_episode(self, episode_cond: dict) -> None:
        from lerobot.datasets.utils import serialize_dict

        tasks = self._update_tasks()
        ep = self.num_episodes
        arrays, n, ep_tasks = self._episode_arrays(tasks, self.info["total_frames"])
        path = self.root / V21_DATA_PATH.format(episode_chunk=0, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._table(arrays).to_parquet(path)
        stats = self._episode_stats(arrays)
        for key in self.video_keys:
            self._encode(key, ep, self.root / V21_VIDEO_PATH.format(episode_chunk=0, video_key=key, episode_index=ep))
        if ep == 0 and self.video_keys:
            from lerobot.datasets.video_utils import get_video_info

            for key in self.video_keys:
                video = self.root / V21_VIDEO_PATH.format(episode_chunk=0, video_key=key, episode_index=0)
                self.info["features"][key]["info"] = fork_video_info(get_video_info(video))
        self.info.update(total_episodes=ep + 1, total_frames=self.info["total_frames"] + n, total_tasks=len(tasks),
                         total_chunks=1, total_videos=self.info["total_videos"] + len(self.video_keys),
                         splits={"train": f"0:{ep + 1}"})
        self._write_info()
        self._append_jsonl("episodes.jsonl", {"episode_index": ep, "tasks": ep_tasks, "length": n, "condition": episode_cond})
        self._append_jsonl("episodes_stats.jsonl", {"episode_index": ep, "stats": serialize_dict(stats)})

    def _update_tasks(self) -> dict[str, int]:
        path = self.root / "meta" / "tasks.jsonl"
        known = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        tasks = {item["task"]: item["task_index"] for item in known}
        for task in dict.fromkeys(self.buffer["task"]):
            if task not in tasks:
                tasks[task] = len(tasks)
                self._append_jsonl("tasks.jsonl", {"task_index": tasks[task], "task": task})
        return tasks

    def _append_jsonl(self, name: str, item: dict) -> None:
        with open(self.root / "meta" / name, "a") as f:
            f.write(json.dumps(item) + "\n")


class LeRobotWriter:
    """Upstream lerobot as the pipeline's own recorders use it; complete only after `close()` (finalize)."""

    def __init__(self, root: Path, features: dict, fps: int, robot_type: str, vcodec: str, resume: bool,
                 finalize: bool = True) -> None:
        from lerobot.configs.video import RGBEncoderConfig
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        repo_id = f"tatbot/{Path(root).name}"
        if resume:
            self.dataset = LeRobotDataset(repo_id, root=root)
        else:
            self.dataset = LeRobotDataset.create(repo_id, fps=fps, root=root, robot_type=robot_type,
                                                 features=features, use_videos=True,
                                                 rgb_encoder=RGBEncoderConfig(vcodec=vcodec))
        self.finalize = finalize

    @property
    def num_episodes(self) -> int:
        return self.dataset.meta.total_episodes

    def add_frame(self, frame: dict) -> None:
        self.dataset.add_frame(frame)

    def save_episode(self, episode_cond: dict) -> None:  # noqa: ARG002 - upstream has no episode conditions
        self.dataset.save_episode()

    def close(self) -> None:
        if self.finalize:
            self.dataset.finalize()


WRITERS: dict[str, type] = {"v3.0": ForkV30Writer, "v2.1": ForkV21Writer, "lerobot": LeRobotWriter}
