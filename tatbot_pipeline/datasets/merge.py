"""Merge chosen episodes of several LeRobot v3.0 recordings into one new LeRobot dataset, losslessly.

Why not `lerobot.datasets.dataset_tools.split_dataset`/`delete_episodes` + `aggregate.aggregate_datasets` (0.4.4)?
- Selecting a subset of the episodes in a video file makes `_keep_episodes_from_video_with_av` decode and re-encode
  it: lossy (frames no longer equal the recording) and far slower than a copy. tatbot writes all episodes of a
  session into one mp4 per camera, so every split would re-encode every video.
- `aggregate_videos` appends each source mp4 to the current destination file by re-muxing the whole file again:
  O(n²) bytes over many recordings.
- After either, `stats.json` and the per-episode `stats/index|episode_index|task_index/*` columns still hold the
  source values (DESIGN.md §7).
So videos are copied whole, one destination file per source file (the episodes keep their `from/to_timestamp`;
frames of episodes left out stay in the file but nothing references them), parquet rows are filtered and
re-indexed with pyarrow (in the first source's schema and HF metadata: recordings of other eras, which store the
same features as other parquet types, are cast to it), the index stats are recomputed, and `check_merged`
verifies the chunk/file mapping before a dataset is published. LeRobot's own helpers do the writing of
info/tasks/stats (`write_info`, `write_tasks`, `write_stats`) and the statistics (`get_feature_stats`,
`aggregate_stats`), so the files are exactly what `LeRobotDataset(root=...)` expects.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tatbot_pipeline.lerobot_tables import common_schema, conform, numpy_column, read_episodes, read_info
from tatbot_pipeline.lerobot_tables import read_tasks

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EpisodeSource:
    """Episodes `episodes` (source indices) of the LeRobot dataset at `root`; `name` is kept for lineage."""

    name: str
    root: Path
    episodes: tuple[int, ...]


@dataclass
class MergedDataset:
    root: Path
    episodes: int
    frames: int
    tasks: int
    lineage: list[tuple[str, int]] = field(default_factory=list)  # new episode index -> (recording, source episode)


class SourceCache:
    """What the train and val merges of one split version share: source metadata read once, videos copied once.

    train and val reference the same recording videos; the second request for a source file hard-links the first
    copy, which keeps the build at about one copy of the source bytes. Links stay inside the split dir, never
    into the recordings root. Copies run on background threads (sendfile releases the GIL) while the parquet
    work goes on; `wait` joins them. Use as a context manager so the threads always stop.
    """

    def __init__(self, copy_threads: int = 2) -> None:
        self._placed: dict[Path, Path] = {}
        self._episodes: dict[Path, pa.Table] = {}  # small meta tables only; data is read per use
        self._task_names: dict[Path, list[str]] = {}
        self._pool = ThreadPoolExecutor(max_workers=copy_threads, thread_name_prefix="split-copy")
        self._pending: list[Future] = []
        self.durations: dict[tuple[int, int], float] = {}  # (st_dev, st_ino) -> seconds, for check_merged

    def __enter__(self) -> "SourceCache":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def episodes(self, root: Path) -> pa.Table:
        if root not in self._episodes:
            self._episodes[root] = read_episodes(root)
        return self._episodes[root]

    def task_names(self, root: Path) -> list[str]:
        """Task strings in task_index order (LeRobot keeps the string as the tasks table's index)."""
        if root not in self._task_names:
            self._task_names[root] = read_tasks(root).index.tolist()
        return self._task_names[root]

    def place(self, src: Path, dst: Path) -> None:
        """Copy `src` to `dst` in the background, or hard-link an earlier (finished) copy of it."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        first = self._placed.get(src)
        if first is not None and first.exists():
            try:
                os.link(first, dst)
                return
            except OSError:  # filesystem without hard links: fall back to a copy
                pass
        self._pending.append(self._pool.submit(shutil.copyfile, src, dst))
        self._placed.setdefault(src, dst)

    def wait(self) -> None:
        """Block until every queued copy is on disk; re-raises the first copy error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


class _DataWriter:
    """Appends re-indexed data tables to data/chunk-XXX/file-YYY.parquet, starting a new file past the size limit.

    A table is never split, so every episode's rows sit in exactly one file (what meta/episodes records).
    """

    def __init__(self, out: Path, max_bytes: float, chunks_size: int) -> None:
        self.out, self.max_bytes, self.chunks_size = out, max_bytes, chunks_size
        self.cursor = (0, 0)
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0  # kept as a running total: re-summing the queue on every append was quadratic

    def append(self, table: pa.Table) -> tuple[int, int]:
        """Queue `table`; returns the (chunk, file) it will be written to."""
        if self.pending and self.pending_bytes + table.nbytes > self.max_bytes:
            self.flush()
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        return self.cursor

    def flush(self) -> None:
        from lerobot.datasets.utils import DEFAULT_DATA_PATH

        if not self.pending:
            return
        path = self.out / DEFAULT_DATA_PATH.format(chunk_index=self.cursor[0], file_index=self.cursor[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(self.pending), path, compression="snappy")
        self.cursor = _chunk_file(self.cursor, self.chunks_size)
        self.pending, self.pending_bytes = [], 0


def _chunk_file(idx: tuple[int, int], chunks_size: int) -> tuple[int, int]:
    from lerobot.datasets.utils import update_chunk_file_indices

    return update_chunk_file_indices(idx[0], idx[1], chunks_size)


def _first_last_rows(episode_of_row: np.ndarray) -> dict[int, tuple[int, int]]:
    """Episode -> (first row, last row) in one pass; a mask per episode made the merge quadratic in episodes."""
    episodes, first = np.unique(episode_of_row, return_index=True)
    _, last_reversed = np.unique(episode_of_row[::-1], return_index=True)
    last = len(episode_of_row) - 1 - last_reversed
    return {int(e): (int(f), int(la)) for e, f, la in zip(episodes, first, last)}


def _rows_by_episode(episode_of_row: np.ndarray) -> dict[int, np.ndarray]:
    """Episode -> its row positions in file order, from one stable sort instead of a mask per episode."""
    order = np.argsort(episode_of_row, kind="stable")
    episodes, starts, counts = np.unique(episode_of_row[order], return_index=True, return_counts=True)
    return {int(e): order[s:s + c] for e, s, c in zip(episodes, starts, counts)}


def _column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature stats, shaped as `compute_episode_stats` shapes them (1-D -> keepdims)."""
    from lerobot.datasets.compute_stats import get_feature_stats

    return get_feature_stats(values, axis=0, keepdims=values.ndim == 1)


@functools.lru_cache(maxsize=4096)
def _base_stats(kind: str, length: int) -> dict[str, np.ndarray]:
    return _column_stats(np.arange(length, dtype=np.int64) if kind == "range" else np.zeros(length, dtype=np.int64))


def _index_stats(kind: str, length: int, offset: int) -> dict[str, np.ndarray]:
    """Stats of `offset + arange(length)` ("range") or of `length` copies of `offset` ("const").

    Shift-invariant, so each episode length is computed once instead of once per episode and column.
    """
    return {k: v if k in ("count", "std") else v + offset for k, v in _base_stats(kind, length).items()}


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    field_ = table.schema.field(i)
    return table.set_column(i, field_, pa.array(values, type=field_.type))


def write_merged_dataset(
    sources: list[EpisodeSource], out: Path, cache: SourceCache | None = None
) -> MergedDataset:
    """Write the chosen episodes of `sources`, in order, as one LeRobot dataset at `out` (must not exist).

    Sources must share fps and features (checked by selection.check_compatible before); how each stores them may
    differ (recording eras): tables are cast to the first source's schema.
    """
    if out.exists():
        raise FileExistsError(f"{out}: already exists — merged datasets are written once; delete it to rebuild")
    if not sources or not any(s.episodes for s in sources):
        raise ValueError(f"{out}: no episodes to merge")
    if cache is None:
        with SourceCache() as own:
            return write_merged_dataset(sources, out, own)
    merge = _Merge(out, read_info(sources[0].root), cache)
    for src in sources:
        merge.add(src)
    merged = merge.finish()
    log.info("%s: %d episodes, %d frames from %d recordings", out, merged.episodes, merged.frames, len(sources))
    cache.wait()
    problems = check_merged(out, cache.durations)
    if problems:
        raise RuntimeError(f"{out}: merged dataset is inconsistent, not publishing it: " + "; ".join(problems[:10]))
    return merged


class _Merge:
    """One merged dataset being written: what carries over from source to source (new task and frame indices,
    the data writer, the video file cursors) and what the global stats are computed from at the end.
    """

    def __init__(self, out: Path, info: dict, cache: SourceCache) -> None:
        features = info["features"]
        self.out, self.info, self.cache = out, info, cache
        self.chunks_size = int(info["chunks_size"])
        self.video_keys = [k for k, f in features.items() if f["dtype"] == "video"]
        self.numeric_keys = [k for k, f in features.items() if f["dtype"] not in ("video", "image", "string")]
        self.writer = _DataWriter(out, float(info["data_files_size_in_mb"]) * 1024**2, self.chunks_size)
        self.tasks: dict[str, int] = {}  # task string -> new task_index, in order of first use
        self.lineage: list[tuple[str, int]] = []
        self.data_columns: dict[str, list[np.ndarray]] = {k: [] for k in self.numeric_keys}
        self.video_cursor: dict[str, tuple[int, int] | None] = {k: None for k in self.video_keys}
        self.episode_tables: list[pa.Table] = []
        self.data_schema: pa.Schema | None = None  # the first source's; later sources are cast to it
        self.next_episode = self.next_index = 0

    def add(self, src: EpisodeSource) -> None:
        """Append the source's chosen episodes: data rows re-indexed, videos placed, episode rows rewritten."""
        episodes = self._chosen_episodes(src)
        found = episodes["episode_index"].to_pylist()
        ep_map = {old: self.next_episode + i for i, old in enumerate(found)}
        self.next_episode += len(found)
        self.lineage += [(src.name, old) for old in found]
        for ep_tasks in episodes["tasks"].to_pylist():
            for task in ep_tasks:
                self.tasks.setdefault(task, len(self.tasks))
        task_map = np.array([self.tasks.get(t, -1) for t in self.cache.task_names(src.root)], dtype=np.int64)
        ep_file, ep_range = self._copy_data(src, episodes, ep_map, task_map)
        new_ids = [ep_map[old] for old in found]
        columns = _data_columns(new_ids, ep_file, ep_range)
        task_of = {e: self.tasks[t[0]] for e, t in zip(new_ids, episodes["tasks"].to_pylist())}
        columns.update(_index_stats_columns(new_ids, ep_range, task_of, episodes.schema.names))
        columns.update(self._place_videos(src, episodes))
        for name, values in columns.items():
            episodes = _set_column(episodes, name, values)
        self.episode_tables.append(episodes)

    def _chosen_episodes(self, src: EpisodeSource) -> pa.Table:
        all_episodes = self.cache.episodes(src.root)
        wanted = pa.array(sorted(src.episodes), type=pa.int64())
        episodes = all_episodes.filter(pc.is_in(all_episodes["episode_index"], value_set=wanted))
        found = episodes["episode_index"].to_pylist()
        if found != sorted(src.episodes):
            missing = sorted(set(src.episodes) - set(found))
            raise ValueError(f"{src.root}: episodes {missing} not in meta/episodes — re-run validation")
        return episodes

    def _copy_data(self, src: EpisodeSource, episodes: pa.Table, ep_map: dict[int, int], task_map: np.ndarray
                   ) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
        """Filter each source data file to the chosen episodes, re-index it and queue it for writing.

        Returns episode -> (chunk, file) it was written to, and episode -> [from, to) new frame index range.
        """
        from lerobot.datasets.utils import DEFAULT_DATA_PATH

        wanted = pa.array(sorted(ep_map), type=pa.int64())
        ep_file: dict[int, tuple[int, int]] = {}
        ep_range: dict[int, tuple[int, int]] = {}
        files = sorted(set(zip(episodes["data/chunk_index"].to_pylist(), episodes["data/file_index"].to_pylist())))
        for chunk, file in files:
            table = pq.read_table(src.root / DEFAULT_DATA_PATH.format(chunk_index=chunk, file_index=file))
            table = table.filter(pc.is_in(table["episode_index"], value_set=wanted)).sort_by("index")
            if len(table) == 0:
                continue
            table, new_eps, new_index = self._reindex(table, ep_map, task_map)
            where = self.writer.append(table)
            for key in self.numeric_keys:
                self.data_columns[key].append(numpy_column(table[key]))
            for ep, (first, last) in _first_last_rows(new_eps).items():
                ep_file[ep] = where
                ep_range[ep] = (int(new_index[first]), int(new_index[last]) + 1)
        return ep_file, ep_range

    def _reindex(self, table: pa.Table, ep_map: dict[int, int], task_map: np.ndarray
                 ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """The table in the merged schema with new episode_index, index and task_index columns."""
        self.data_schema = self.data_schema or table.schema
        table = conform(table, self.data_schema)
        new_eps = np.vectorize(ep_map.__getitem__, otypes=[np.int64])(table["episode_index"].to_numpy())
        new_index = np.arange(self.next_index, self.next_index + len(table), dtype=np.int64)
        self.next_index += len(table)
        table = _set_column(table, "episode_index", new_eps)
        table = _set_column(table, "index", new_index)
        table = _set_column(table, "task_index", task_map[table["task_index"].to_numpy()])
        return table, new_eps, new_index

    def _place_videos(self, src: EpisodeSource, episodes: pa.Table) -> dict[str, list[int]]:
        """Whole video files, one destination file per source file; the timestamps inside them stay valid."""
        from lerobot.datasets.utils import DEFAULT_VIDEO_PATH

        columns: dict[str, list[int]] = {}
        for key in self.video_keys:
            pairs = list(zip(episodes[f"videos/{key}/chunk_index"].to_pylist(),
                             episodes[f"videos/{key}/file_index"].to_pylist()))
            mapping: dict[tuple[int, int], tuple[int, int]] = {}
            for pair in sorted(set(pairs)):
                cursor = self.video_cursor[key]
                cursor = (0, 0) if cursor is None else _chunk_file(cursor, self.chunks_size)
                self.video_cursor[key] = mapping[pair] = cursor
                self.cache.place(
                    src.root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=pair[0], file_index=pair[1]),
                    self.out / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=cursor[0], file_index=cursor[1]),
                )
            columns[f"videos/{key}/chunk_index"] = [mapping[p][0] for p in pairs]
            columns[f"videos/{key}/file_index"] = [mapping[p][1] for p in pairs]
        return columns

    def finish(self) -> MergedDataset:
        """Flush the data, then write meta/: episodes, tasks, stats and info (LeRobot's own writers)."""
        from lerobot.datasets.io_utils import write_info, write_stats, write_tasks
        from lerobot.datasets.utils import DatasetInfo

        self.writer.flush()
        episodes = self._write_episodes()
        tasks = self.tasks
        write_tasks(pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks))), self.out)
        write_stats(self._stats(episodes), self.out)
        n_eps, n_frames = self.next_episode, self.next_index
        self.info.update(total_episodes=n_eps, total_frames=n_frames, total_tasks=len(tasks),
                         splits={"train": f"0:{n_eps}"})
        write_info(DatasetInfo.from_dict(self.info), self.out)
        return MergedDataset(root=self.out, episodes=n_eps, frames=n_frames, tasks=len(tasks), lineage=self.lineage)

    def _write_episodes(self) -> pa.Table:
        """One episodes file in the first source's schema, keeping the columns every source has.

        Recorders add their own columns (upstream lerobot's quantile stats, the v2.1 fork's `condition`): a column
        some source lacks would have no value for its episodes, so it is left out.
        """
        from lerobot.datasets.utils import DEFAULT_EPISODES_PATH

        schema = common_schema([t.schema for t in self.episode_tables])
        left_out = sorted({n for t in self.episode_tables for n in t.schema.names} - set(schema.names))
        if left_out:
            log.info("%s: episodes columns not in every source left out: %s", self.out, left_out)
        episodes = pa.concat_tables([conform(t, schema) for t in self.episode_tables])
        path = self.out / DEFAULT_EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(episodes, path)
        return episodes

    def _stats(self, episodes: pa.Table) -> dict[str, dict[str, np.ndarray]]:
        """Exact over the merged frames for numeric features; videos aggregated from the per-episode stats the
        recorder computed (the frames are the same, so re-sampling them would only add noise)."""
        from lerobot.datasets.compute_stats import aggregate_stats

        stats = {key: _column_stats(np.concatenate(parts)) for key, parts in self.data_columns.items()}
        for key in self.video_keys:
            stats[key] = aggregate_stats([{key: s} for s in _episode_stats(episodes, key)])[key]
        return stats


def _data_columns(new_ids: list[int], ep_file: dict[int, tuple[int, int]], ep_range: dict[int, tuple[int, int]]
                  ) -> dict[str, list[int]]:
    """Where each new episode's rows are: data file, frame index range (one episodes file, so meta/ is 0/0)."""
    return {
        "episode_index": new_ids,
        "data/chunk_index": [ep_file[e][0] for e in new_ids],
        "data/file_index": [ep_file[e][1] for e in new_ids],
        "dataset_from_index": [ep_range[e][0] for e in new_ids],
        "dataset_to_index": [ep_range[e][1] for e in new_ids],
        "meta/episodes/chunk_index": [0] * len(new_ids),
        "meta/episodes/file_index": [0] * len(new_ids),
    }


def _index_stats_columns(new_ids: list[int], ep_range: dict[int, tuple[int, int]], task_of: dict[int, int],
                         names: list[str]) -> dict[str, list]:
    """Per-episode stats of the re-indexed columns, for the stats columns the episodes table has.

    tatbot episodes have exactly one task each, so task_index is constant over an episode.
    """
    per_column = {
        "index": [_index_stats("range", ep_range[e][1] - ep_range[e][0], ep_range[e][0]) for e in new_ids],
        "episode_index": [_index_stats("const", ep_range[e][1] - ep_range[e][0], e) for e in new_ids],
        "task_index": [_index_stats("const", ep_range[e][1] - ep_range[e][0], task_of[e]) for e in new_ids],
    }
    return {f"stats/{column}/{stat}": [s[stat].tolist() for s in per_ep]
            for column, per_ep in per_column.items() for stat in per_ep[0] if f"stats/{column}/{stat}" in names}


def _episode_stats(episodes: pa.Table, key: str) -> list[dict[str, np.ndarray]]:
    """Per-episode image stats back from parquet: (3, 1, 1) float arrays, count (1,) int.

    Read column by column into arrays: `to_pylist` made a nested Python list per value, and the garbage collector's
    passes over those made this step quadratic in the number of episodes.
    """
    prefix = f"stats/{key}/"
    columns = {name[len(prefix):]: numpy_column(episodes[name]) for name in episodes.schema.names
               if name.startswith(prefix)}
    columns = {stat: values.astype(np.int64 if stat == "count" else np.float64) for stat, values in columns.items()}
    return [{stat: values[i] for stat, values in columns.items()} for i in range(episodes.num_rows)]


_BOOKKEEPING = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index"]


def check_merged(root: Path, durations: dict[tuple[int, int], float] | None = None) -> list[str]:
    """Problems in a merged dataset's bookkeeping (empty list = consistent).

    Catches what merges get wrong: episode rows not in the data file the metadata names, holes in `index`,
    task indices that do not match the episode's task, video time ranges past the end of the file, stale index
    stats. Reads only the bookkeeping columns, so it stays cheap next to copying the videos.
    """
    info = read_info(root)
    video_keys = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    columns = _BOOKKEEPING + [f"videos/{k}/{c}" for k in video_keys
                              for c in ("chunk_index", "file_index", "to_timestamp")]
    episodes = read_episodes(root, columns)
    ep = {c: episodes[c].to_pylist() for c in columns}
    tasks = read_tasks(root)
    return (_check_totals(info, ep, tasks) + _check_data_files(root, info, ep, tasks)
            + _check_videos(root, info, ep, video_keys, {} if durations is None else durations)
            + _check_index_stats(root, info))


def _check_totals(info: dict, ep: dict[str, list], tasks: pd.DataFrame) -> list[str]:
    """Episode and task indices contiguous from 0, episode lengths adding up to info.json's frame count."""
    problems: list[str] = []
    n_eps, n_frames = info["total_episodes"], info["total_frames"]
    if ep["episode_index"] != list(range(n_eps)):
        problems.append(f"episode indices are not 0..{n_eps - 1}")
    if list(tasks["task_index"]) != list(range(info["total_tasks"])):
        problems.append("task indices are not contiguous")
    if sum(ep["length"]) != n_frames:
        problems.append(f"episodes hold {sum(ep['length'])} frames, info.json says {n_frames}")
    return problems


def _check_data_files(root: Path, info: dict, ep: dict[str, list], tasks: pd.DataFrame) -> list[str]:
    """Every data file the episodes name exists and holds exactly their rows; no rows beyond the frame count."""
    from lerobot.datasets.utils import DEFAULT_DATA_PATH

    problems: list[str] = []
    rows_total = 0
    by_file: dict[tuple[int, int], list[int]] = {}
    for i in range(len(ep["episode_index"])):
        by_file.setdefault((ep["data/chunk_index"][i], ep["data/file_index"][i]), []).append(i)
    for (chunk, file), members in sorted(by_file.items()):
        path = root / DEFAULT_DATA_PATH.format(chunk_index=chunk, file_index=file)
        if not path.exists():
            problems.append(f"episodes {[ep['episode_index'][i] for i in members]}: data file {path.name} missing")
            continue
        data = pq.read_table(path, columns=["index", "episode_index", "frame_index", "task_index"])
        rows_total += len(data)
        problems += _check_episode_rows(data, (chunk, file), [{c: ep[c][i] for c in ep} for i in members], tasks)
    if rows_total != info["total_frames"]:
        problems.append(f"data files hold {rows_total} rows for {info['total_frames']} frames")
    return problems


def _check_episode_rows(data: pa.Table, where: tuple[int, int], episodes: list[dict], tasks: pd.DataFrame
                        ) -> list[str]:
    """The rows of one data file against the episodes that say they are in it (index range, frames, task)."""
    problems: list[str] = []
    ep_col, idx, frame, task = (data[c].to_numpy() for c in ("episode_index", "index", "frame_index", "task_index"))
    rows_of = _rows_by_episode(ep_col)
    for row in episodes:
        e, lo, hi = row["episode_index"], row["dataset_from_index"], row["dataset_to_index"]
        rows = rows_of.get(e, np.zeros(0, dtype=np.int64))
        if not np.array_equal(idx[rows], np.arange(lo, hi)) or hi - lo != row["length"]:
            problems.append(f"episode {e}: rows in data file {where} do not match its index range")
        elif not np.array_equal(frame[rows], np.arange(hi - lo)):
            problems.append(f"episode {e}: frame_index is not 0..{hi - lo - 1}")
        elif set(tasks.index[np.unique(task[rows])]) != set(row["tasks"]):
            problems.append(f"episode {e}: task_index does not match tasks {row['tasks']}")
    return problems


def _check_videos(root: Path, info: dict, ep: dict[str, list], video_keys: list[str],
                  durations: dict[tuple[int, int], float]) -> list[str]:
    """Every episode's video file exists and is long enough for its to_timestamp (one frame of slack)."""
    from lerobot.datasets.utils import DEFAULT_VIDEO_PATH
    from lerobot.datasets.video_utils import get_video_duration_in_s

    problems: list[str] = []
    for key in video_keys:
        for i, e in enumerate(ep["episode_index"]):
            chunk, file = ep[f"videos/{key}/chunk_index"][i], ep[f"videos/{key}/file_index"][i]
            path = root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            if not path.exists():
                problems.append(f"episode {e}: video {path.relative_to(root)} missing")
                continue
            st = path.stat()
            if (st.st_dev, st.st_ino) not in durations:  # hard-linked copies are probed once
                durations[(st.st_dev, st.st_ino)] = get_video_duration_in_s(path)
            if ep[f"videos/{key}/to_timestamp"][i] > durations[(st.st_dev, st.st_ino)] + 1.0 / info["fps"]:
                problems.append(f"episode {e}: {key} ends after the end of {path.relative_to(root)}")
    return problems


def _check_index_stats(root: Path, info: dict) -> list[str]:
    """stats.json's index/episode_index ranges are the merged ones, not a source's (lerobot's aggregate gap)."""
    stats = json.loads((root / "meta" / "stats.json").read_text())
    problems: list[str] = []
    for column, hi in (("index", info["total_frames"] - 1), ("episode_index", info["total_episodes"] - 1)):
        if [stats[column]["min"][0], stats[column]["max"][0]] != [0, hi]:
            problems.append(f"stats.json {column} min/max {stats[column]['min']}/{stats[column]['max']} != 0/{hi}")
    return problems
