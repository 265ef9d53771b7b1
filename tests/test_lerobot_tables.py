"""The one reader of LeRobot parquet tables: columns as arrays, episodes in order, casts between recording eras."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tatbot_pipeline.lerobot_tables import common_schema, conform, numpy_column, read_episodes


def test_numpy_column_gives_one_axis_per_list_level():
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    variable = pa.chunked_array([pa.array(rows[:1], pa.list_(pa.float64())), pa.array(rows[1:], pa.list_(pa.float64()))])
    fixed = pa.array(rows, pa.list_(pa.float32(), 3))
    np.testing.assert_array_equal(numpy_column(variable), np.array(rows))
    assert numpy_column(fixed).dtype == np.float32 and numpy_column(fixed).shape == (2, 3)
    stats = pa.array([[[[0.1]], [[0.2]], [[0.3]]]] * 4)  # image stats, (3, 1, 1) per episode
    assert numpy_column(stats).shape == (4, 3, 1, 1)
    np.testing.assert_array_equal(numpy_column(pa.chunked_array([pa.array([3, 1, 2])])), [3, 1, 2])
    with pytest.raises(ValueError):  # ragged lists have no array shape
        numpy_column(pa.array([[1.0, 2.0], [3.0]]))


def test_read_episodes_sorts_across_files_and_names_a_missing_table(tmp_path):
    episodes = tmp_path / "meta" / "episodes"
    for chunk, (eps, lengths) in enumerate((([2, 3], [8, 9]), ([0, 1], [6, 7]))):
        (episodes / f"chunk-{chunk:03d}").mkdir(parents=True)
        pq.write_table(pa.table({"episode_index": eps, "length": lengths}), episodes / f"chunk-{chunk:03d}/file-000.parquet")
    table = read_episodes(tmp_path, ["length"])
    assert table.column_names == ["length"] and table["length"].to_pylist() == [6, 7, 8, 9]
    assert read_episodes(tmp_path)["episode_index"].to_pylist() == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match="meta/episodes missing.*never finalized"):
        read_episodes(tmp_path / "elsewhere")


def test_conform_casts_a_fork_table_to_an_upstream_schema_and_back():
    fork = pa.table({"timestamp": pa.array([0.0, 0.1]), "action": pa.array([[0.5, 0.25]] * 2, pa.list_(pa.float64())),
                     "extra": [1, 2]})
    upstream = pa.schema([("action", pa.list_(pa.float32(), 2)), ("timestamp", pa.float32())])
    cast = conform(fork, upstream)
    assert cast.schema.equals(upstream) and cast["action"].to_pylist() == [[0.5, 0.25]] * 2
    assert conform(cast, cast.schema) is cast  # already in shape: no copy
    with pytest.raises(pa.ArrowInvalid, match="expected size"):
        conform(pa.table({"timestamp": [0.0], "action": pa.array([[0.5]], pa.list_(pa.float64()))}), upstream)
    shared = common_schema([fork.schema, upstream])
    assert shared.names == ["timestamp", "action"] and shared.field("action").type == pa.list_(pa.float64())
