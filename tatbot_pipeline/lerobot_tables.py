"""The parquet side of a LeRobot v3.0 dataset (meta/info.json, meta/episodes, meta/tasks.parquet, data/), read one
way everywhere: validation, v2.1 conversion, split selection and the merge read through here.

Tables are read with pyarrow directly, never through `LeRobotDataset`: that builds an HF datasets cache and, with
meta missing, may try the Hub (DESIGN.md §7), and the pipeline needs columns, not frames. List columns (`action`,
`observation.state`, per-episode stats) become numpy arrays without a Python loop, which keeps validation and the
merge linear in the number of frames. No lerobot or dagster import: this module is a leaf.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

EPISODES_FILES = "meta/episodes/chunk-*/file-*.parquet"
DATA_FILES = "data/chunk-*/file-*.parquet"


def read_info(root: Path) -> dict:
    """meta/info.json as a dict (features, fps, chunks_size, totals)."""
    return json.loads((Path(root) / "meta" / "info.json").read_text())


def episodes_files(root: Path) -> list[Path]:
    """The episodes parquet files in chunk/file order (empty until the writer has flushed them)."""
    return sorted(Path(root).glob(EPISODES_FILES))


def data_files(root: Path) -> list[Path]:
    """The data parquet files in chunk/file order."""
    return sorted(Path(root).glob(DATA_FILES))


def read_tables(files: Sequence[Path], columns: Sequence[str] | None = None) -> pa.Table:
    """Several parquet files of one dataset as one table, in file order.

    A column one file lacks comes back null for its rows (`promote_options="default"`), the way concatenating the
    files with pandas always did, so a resumed session whose files differ reads instead of failing.
    """
    cols = list(columns) if columns is not None else None
    return pa.concat_tables([pq.read_table(f, columns=cols) for f in files], promote_options="default")


def read_episodes(root: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """meta/episodes of the dataset at `root`, sorted by episode_index; FileNotFoundError when none was written."""
    files = episodes_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: meta/episodes missing (dataset never finalized?) — re-run validation, "
                                "or rebuild the split if this is one")
    if columns is None:
        return read_tables(files).sort_by("episode_index")
    wanted = list(columns)
    table = read_tables(files, list(dict.fromkeys(["episode_index", *wanted]))).sort_by("episode_index")
    return table.select(wanted)


def read_tasks(root: Path) -> pd.DataFrame:
    """meta/tasks.parquet sorted by task_index; LeRobot keeps the task string as the frame's index."""
    return pq.read_table(Path(root) / "meta" / "tasks.parquet").to_pandas().sort_values("task_index")


def numpy_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A parquet column as one array of shape (rows, ...): scalars stay 1-D, a list column (`action`,
    `observation.state`: (n, 14); image stats: (n, 3, 1, 1)) gains one axis per list level.

    Lists must have one length per level (LeRobot features have fixed shapes); ragged lists raise ValueError.
    """
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(values)]
    while pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
        shape.append(values.type.list_size if pa.types.is_fixed_size_list(values.type)
                     else (len(values[0]) if len(values) else 0))
        values = values.flatten()
    return values.to_numpy(zero_copy_only=False).reshape(shape)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, order and types (extra columns dropped).

    Recordings of different eras store the same feature differently: tatbot's fork writes `action` as list<double>
    and `timestamp` as double, upstream lerobot (0.4.4, 0.6.1) writes fixed_size_list<float>[14] and float. Values are
    float32 either way, so casting one to the other is exact; a list of the wrong length raises ArrowInvalid.
    """
    if table.schema.names == schema.names and table.schema.equals(schema):
        return table
    return table.select(schema.names).cast(schema)


def common_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """The first schema cut down to the columns every schema has (in its order, with its types and metadata)."""
    first = schemas[0]
    shared = [f for f in first if all(f.name in s.names for s in schemas[1:])]
    return pa.schema(shared, metadata=first.metadata)
