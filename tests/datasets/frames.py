"""Merged datasets read back with LeRobot itself and compared, frame by frame, with the recordings they came from."""

from __future__ import annotations

from pathlib import Path

import torch


def load(root: Path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("local/split", root=root, video_backend="pyav")


def assert_frames_from_sources(ds, lineage: list, sources: dict) -> None:
    """Every frame of `ds` equals, bit for bit (values and decoded video), the source frame its lineage names.

    `lineage[new episode] = (source name, source episode)`; `sources` maps the names to loaded source datasets.
    """
    keys = ["action", "observation.state", "timestamp", *ds.meta.video_keys]
    for i in range(len(ds)):
        item = ds[i]
        name, src_ep = lineage[int(item["episode_index"])]
        src = sources[name]
        ref = src[int(src.meta.episodes[src_ep]["dataset_from_index"]) + int(item["frame_index"])]
        for key in keys:
            assert torch.equal(item[key], ref[key]), (name, src_ep, i, key)
        assert item["task"] == ref["task"]
