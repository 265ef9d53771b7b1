"""Ingestion benchmarks (issues 4 and 16), printed as figures against their targets.

1. validate_recording on a 100-episode recording with two cameras vs iterating the same recording frame by frame
   with LeRobotDataset (what a hand-written validator would do). Target: >= 20x faster.
2. The recordings sensor at lab scale, on a real SQLite instance:
   - a backlog of 10,000 settled dirs appearing at once (first start on an archive): total sensor time until nothing
     is left, number of ticks, and the cursor Dagster stores in every tick row. Targets: <= 10 s, <= 10 KB;
   - applying its partition request the way the daemon does (an existence check per key, then one insert);
   - a steady tick (nothing new) over 20,000 dirs. Target: <= 1 s.

Run: .venv/bin/python bench/bench_ingestion.py [--episodes 100] [--dirs 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from tatbot_pipeline.config import PipelineSettings, apply_offline_defaults
from tatbot_pipeline.definitions import build_definitions
from tatbot_pipeline.defs.ingestion import recordings_sensor
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.recordings.naming import recording_dir_name
from tatbot_pipeline.recordings.validate import validate_recording
from tatbot_pipeline.synth import SynthSpec, make_recordings

apply_offline_defaults()  # before anything imports lerobot
# What the code location loads (definitions.defs), from this process's settings.
defs = build_definitions(PipelineSettings.from_env())


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


def stub_recordings(root: Path, first: int, n: int) -> None:
    """Only what the sensor looks at: the dir layout and the files it stats (it never opens them), an hour old."""
    start = datetime(2025, 1, 1)
    old = time.time() - 3600
    for i in range(first, first + n):
        d = root / recording_dir_name("bench", start + timedelta(minutes=i))
        (d / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
        (d / "data" / "chunk-000").mkdir(parents=True)
        (d / "logs").mkdir()
        for rel in ("meta/info.json", "meta/episodes/chunk-000/file-000.parquet", "data/chunk-000/file-000.parquet"):
            (d / rel).touch()
        for p in (d, d / "logs", d / "meta" / "info.json", d / "meta/episodes/chunk-000/file-000.parquet",
                  d / "data/chunk-000/file-000.parquet"):
            os.utime(p, (old, old))


class SensorBench:
    """The real `recordings_sensor` evaluated the way the code server does (`evaluate_tick`, which also resolves each
    partitioned run request) against a real SQLite instance; partition requests applied the way the daemon does."""

    def __init__(self, instance: dg.DagsterInstance, resources: dict) -> None:
        self.instance, self.resources, self.cursor = instance, resources, None
        self.repo = defs.get_repository_def()
        self.apply_s = 0.0

    def tick(self) -> tuple[float, int]:
        """One tick: (seconds evaluating the sensor, runs requested)."""
        context = dg.SensorEvaluationContext(
            instance_ref=self.instance.get_ref(), last_tick_completion_time=None, last_run_key=None,
            cursor=self.cursor, log_key=None, repository_name=self.repo.name, repository_def=self.repo,
            instance=self.instance, resources=self.resources)
        t0 = time.perf_counter()
        data = recordings_sensor.evaluate_tick(context)
        elapsed = time.perf_counter() - t0
        self.cursor = data.cursor or self.cursor
        t0 = time.perf_counter()
        for request in data.dynamic_partitions_requests or []:  # as the daemon does: check each key, add the rest
            keys = [k for k in request.partition_keys if not self.instance.has_dynamic_partition("recordings", k)]
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions("recordings", keys)
        self.apply_s += time.perf_counter() - t0
        return elapsed, len(data.run_requests or [])

    def drain(self) -> tuple[float, int, int]:
        """Tick until nothing is requested: (total sensor seconds, ticks that requested runs, runs requested)."""
        total, ticks, runs = 0.0, 0, 0
        while True:
            elapsed, requested = self.tick()
            total += elapsed
            if not requested:
                return total, ticks, runs
            ticks, runs = ticks + 1, runs + requested


def bench_sensor(tmp: Path, n: int) -> str:
    root = tmp / "many"
    root.mkdir()
    t0 = time.perf_counter()
    stub_recordings(root, 0, n)
    print(f"made {n} recording dirs in {time.perf_counter() - t0:.1f} s")
    resources = {"pipeline": PipelineResource(recordings_dir=str(root), home=str(tmp / "home"), settle_seconds=60)}
    with dg.instance_for_test() as instance:
        bench = SensorBench(instance, resources)
        backlog_s, ticks, runs = bench.drain()
        cursor = len(bench.cursor.encode())
        print(f"backlog of {n} dirs: {runs} runs requested in {ticks} tick(s), {backlog_s:.2f} s of sensor time "
              f"(target <= 10 s); cursor {cursor} B (target <= 10 KB)")
        print(f"the daemon applying its partition requests (an existence query per new key): {bench.apply_s:.1f} s")
        stub_recordings(root, n, n)
        bench.drain()
        cpu0 = time.process_time()
        steady = statistics.median(bench.tick()[0] for _ in range(3))
        cpu = (time.process_time() - cpu0) / 3
        print(f"steady tick (nothing new) over {2 * n} dirs: {steady * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU "
              f"(median of 3; target <= 1 s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return (f"recordings_sensor: {n}-dir backlog in {ticks} tick(s), {backlog_s:.2f} s (<= 10 s), cursor {cursor} B "
            f"(<= 10 KB); steady tick at {2 * n} dirs {steady:.2f} s (<= 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--dirs", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_validation(Path(d), args.episodes)
        headline = bench_sensor(Path(d), args.dirs)
    print(headline)


if __name__ == "__main__":
    main()
