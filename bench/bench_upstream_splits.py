"""Our split merge (`datasets/merge.py`) against lerobot 0.6.1's own tools on the same job (issue 28).

The job: the train and val datasets of `build_splits`, i.e. the usable episodes of several recordings, each assigned
to a side, merged into two LeRobot datasets. Upstream's way to do it with 0.6.1's `dataset_tools`: per recording,
`split_dataset(recording, {"train": [...], "val": [...]})` (excluded episodes left out), then `merge_datasets` of
every recording's train part (and of the val parts), which aggregates and recomputes stats. The episode assignment
is taken from our own manifest, so both sides select exactly the same episodes.

Printed per tool (same sources as bench_splits.py: textured H.264 videos, one mp4 per camera per session, as
tatbot records; median of `--repeat` interleaved runs, 1 by default):
- build time as a ratio to `cp -r` of the sources' meta/, data/ and videos/;
- bytes re-encoded: video bytes written that are not a byte copy of a source file (must be 0: re-encoding is lossy);
- stats correctness: the largest difference between `meta/stats.json` (mean/std/min/max of action,
  observation.state, index, episode_index) and the same statistics computed exactly from the written data parquet.
Nothing is asserted; the last line is the headline ratio.

Run: .venv/bin/python bench/bench_upstream_splits.py [--recordings 4] [--episodes 16] [--stroke-length 64] [--repeat 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench_splits import add_source_arguments, make_sources, source_bytes, time_cp
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.datasets.build import build_splits
from tatbot_pipeline.datasets.split import SplitConfig

STATS_KEYS = ("action", "observation.state", "index", "episode_index")


def ours(settings: PipelineSettings, home: Path) -> tuple[float, dict[str, Path], dict]:
    s = PipelineSettings(recordings_dir=settings.recordings_dir, home=home, settle_seconds=0)
    shutil.copytree(settings.validation_dir, s.validation_dir)
    t0 = time.perf_counter()
    result = build_splits(s, SplitConfig())
    elapsed = time.perf_counter() - t0
    return elapsed, {side: result.side_path(side) for side in ("train", "val")}, result.manifest


def upstream(recordings: list[Path], manifest: dict, out: Path) -> tuple[float, dict[str, Path], list[Path]]:
    """split_dataset per recording, then merge_datasets per side; returns (seconds, side roots, split parts)."""
    from lerobot.datasets import LeRobotDataset, merge_datasets, split_dataset

    by_rec: dict[str, dict[str, list[int]]] = {}
    for side in ("train", "val"):
        for name, episode in manifest["sides"][side]["lineage"]:
            by_rec.setdefault(name, {}).setdefault(side, []).append(int(episode))
    t0 = time.perf_counter()
    parts: dict[str, list] = {"train": [], "val": []}
    part_roots = []
    for rec in recordings:
        dataset = LeRobotDataset(f"tatbot/{rec.name}", root=rec, video_backend="pyav")
        splits = {side: eps for side, eps in by_rec.get(rec.name, {}).items() if eps}
        for side, part in split_dataset(dataset, splits, output_dir=out / "parts" / rec.name).items():
            parts[side].append(part)
            part_roots.append(part.root)
    roots = {}
    for side, datasets in parts.items():
        roots[side] = out / side
        merge_datasets(datasets, output_repo_id=f"tatbot/{side}", output_dir=roots[side])
    return time.perf_counter() - t0, roots, part_roots


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reencoded_bytes(recordings: list[Path], written: list[Path]) -> int:
    """Bytes of mp4 files under `written` that are not byte-identical to a source mp4."""
    sources = {_sha(p) for rec in recordings for p in (rec / "videos").rglob("*.mp4")}
    return sum(p.stat().st_size for root in written for p in (root / "videos").rglob("*.mp4") if _sha(p) not in sources)


def stats_error(root: Path) -> dict[str, float]:
    """key -> max |stats.json - exact statistic over the data parquet| over mean/std/min/max, for STATS_KEYS."""
    stats = json.loads((root / "meta" / "stats.json").read_text())
    table = pa.concat_tables([pq.read_table(p) for p in sorted((root / "data").rglob("*.parquet"))])
    errors = {}
    for key in STATS_KEYS:
        values = np.asarray(table.column(key).to_pylist(), dtype=np.float64)
        exact = {"mean": values.mean(0), "std": values.std(0), "min": values.min(0), "max": values.max(0)}
        errors[key] = max(float(np.max(np.abs(np.asarray(stats[key][name], dtype=np.float64) - value)))
                          for name, value in exact.items())
    return errors


def worst(errors: dict[str, float]) -> str:
    key = max(errors, key=errors.get)
    return f"{errors[key]:.2e} ({key})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser, repeat=1)  # upstream takes ~2 min a run here
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # lerobot's per-file info lines; the figures are what this prints

    with tempfile.TemporaryDirectory(prefix="bench-upstream-splits-") as t:
        tmp = Path(t)
        settings, recordings = make_sources(tmp, args)
        print(f"sources: {args.recordings} recordings x {args.episodes} episodes x {args.stroke_length} frames, "
              f"{source_bytes(recordings) / 1e6:.1f} MB")
        import lerobot.datasets  # noqa: F401  (import not timed)

        time_cp(recordings, tmp / "warm")
        cp_s, ours_s, up_s = [], [], []
        for i in range(args.repeat):
            cp_s.append(time_cp(recordings, tmp / f"cp{i}"))
            seconds, our_roots, manifest = ours(settings, tmp / f"ours{i}")
            ours_s.append(seconds)
            seconds, up_roots, parts = upstream(recordings, manifest, tmp / f"upstream{i}")
            up_s.append(seconds)
        cp = statistics.median(cp_s)
        our_t, up_t = statistics.median(ours_s), statistics.median(up_s)
        # Upstream re-encodes in split_dataset (its parts); merge_datasets then concatenates the parts' videos.
        for label, roots, seconds, written in (("ours", our_roots, our_t, list(our_roots.values())),
                                               ("upstream", up_roots, up_t, parts)):
            episodes = {side: json.loads((r / "meta" / "info.json").read_text())["total_episodes"] for side, r in roots.items()}
            print(f"{label:9s} {seconds:7.2f} s  {seconds / cp:6.2f}x cp -r   re-encoded {reencoded_bytes(recordings, written) / 1e6:7.2f} MB"
                  f"   stats max error train {worst(stats_error(roots['train']))} val {worst(stats_error(roots['val']))}"
                  f"   episodes {episodes}")
        print("upstream stats error per key (train): "
              + ", ".join(f"{k} {v:.2e}" for k, v in stats_error(up_roots["train"]).items()))
        print(f"upstream split+merge / ours: {up_t / our_t:.2f}x build time (cp -r {cp:.2f} s; ours {our_t / cp:.2f}x "
              f"cp -r, upstream {up_t / cp:.2f}x; target for adopting upstream <= 1.2x and 0 bytes re-encoded)")


if __name__ == "__main__":
    main()
