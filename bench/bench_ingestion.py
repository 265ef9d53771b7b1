"""Ingestion benchmarks (issue 4), printed as ratios against the naive way.

1. validate_recording on a 100-episode recording with two cameras vs iterating the same recording frame by frame
   with LeRobotDataset (what a hand-written validator would do). Target: >= 20x faster.
2. One sensor tick over 10,000 recording dirs (first tick: all new; steady tick: nothing changed). Target: <= 1 s.

Run: .venv/bin/python bench/bench_ingestion.py [--episodes 100] [--dirs 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

import tatbot_pipeline  # noqa: F401  (offline env)
from tatbot_pipeline.defs.ingestion import recordings_sensor
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.recordings.naming import recording_dir_name
from tatbot_pipeline.recordings.validate import validate_recording
from tatbot_pipeline.synth import SynthSpec, make_recordings


def bench_validation(tmp: Path, episodes: int) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t0 = time.perf_counter()
    spec = SynthSpec(episodes=episodes, stroke_length=16, cameras=True, image_shape=(240, 320), seed=1)
    [rec] = make_recordings(tmp / "rec", spec)
    print(f"synthesised {episodes}-episode recording with 2 cameras (240x320) in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    report = validate_recording(rec, settle_seconds=0)
    t_validate = time.perf_counter() - t0
    assert report.status.value == "pass", report.findings

    t0 = time.perf_counter()
    ds = LeRobotDataset("bench/naive", root=rec, video_backend="pyav")
    for i in range(len(ds)):
        ds[i]
    t_naive = time.perf_counter() - t0
    print(f"validate_recording: {t_validate:.2f} s   naive LeRobotDataset iteration: {t_naive:.2f} s   "
          f"ratio {t_naive / t_validate:.1f}x (target >= 20x)")


def bench_sensor(tmp: Path, n: int) -> None:
    root = tmp / "many"
    root.mkdir()
    start = datetime(2025, 1, 1)
    # Only what the sensor looks at: the dir layout and the files it stats (it never opens them).
    for i in range(n):
        d = root / recording_dir_name("bench", start + timedelta(minutes=i))
        (d / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        (d / "data" / "chunk-000").mkdir(parents=True)
        (d / "logs").mkdir()
        for rel in ("meta/info.json", "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet"):
            (d / rel).touch()
    old = time.time() - 3600
    import os

    for p in root.rglob("*"):
        os.utime(p, (old, old))
    resources = {"pipeline": PipelineResource(recordings_dir=str(root), home=str(tmp / "home"), settle_seconds=60)}
    with dg.instance_for_test() as instance:
        ticks = [("first tick, all new", None), ("steady tick, nothing changed", json.dumps(_all_seen(root)))]
        for label, cursor in ticks:
            t0 = time.perf_counter()
            result = recordings_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
            dt = time.perf_counter() - t0
            for req in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions("recordings", list(req.partition_keys))
            print(f"sensor {label} over {n} dirs: {dt * 1000:.0f} ms, {len(result.run_requests)} run requests "
                  f"= {dt / 1.0:.2f} of the 1 s budget")


def _all_seen(root: Path) -> dict[str, str]:
    from tatbot_pipeline.recordings.scan import scan_root

    return {s.name: s.signature for s in scan_root(root)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--dirs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_sensor(Path(d), args.dirs)
        bench_validation(Path(d), args.episodes)


if __name__ == "__main__":
    main()
