"""What a checkpoint's split adds over the previous checkpoint's: the loop's "new since" entries, without Dagster."""

from __future__ import annotations

import json
from pathlib import Path

from tatbot_pipeline.training.lineage import LOOP_ENTRIES, new_since_previous


def split(splits_dir: Path, version: str, recordings: dict[str, str], train: list, val: list) -> Path:
    """A split version dir with the manifest the split builder writes (only the fields the lineage reads)."""
    root = splits_dir / version
    (root / "train").mkdir(parents=True)
    manifest = {"version": version, "recordings": [{"name": n, "fingerprint": f} for n, f in recordings.items()],
                "sides": {"train": {"lineage": train}, "val": {"lineage": val}}}
    (root / "split.json").write_text(json.dumps(manifest))
    return root / "train"


def test_new_recordings_changed_ones_and_removed_ones_against_the_previous_split(tmp_path: Path):
    split(tmp_path, "v1", {"a": "fa", "b": "fb", "c": "fc"}, [["a", 0], ["a", 1], ["b", 0]], [["c", 0]])
    train = split(tmp_path, "v2", {"a": "fa", "b": "fb2", "d": "fd"}, [["a", 0], ["a", 1], ["b", 0], ["d", 0]],
                  [["b", 1], ["d", 1]])
    entries = new_since_previous(tmp_path, train, "v1", first=False)
    kind, text = entries[LOOP_ENTRIES[0]]
    assert kind == "md"
    assert text.splitlines()[0] == ("4 new episodes (train 2, val 2) from 1 new and 1 changed recordings; "
                                    "split v1 -> v2")  # b re-recorded: its episodes count as new
    assert "no longer in the split: c" in text
    assert entries[LOOP_ENTRIES[1]] == ("json", ["d", "b"]) and entries[LOOP_ENTRIES[2]] == ("int", 4)


def test_the_first_checkpoint_and_a_vanished_previous_split(tmp_path: Path):
    train = split(tmp_path, "v2", {"a": "fa"}, [["a", 0], ["a", 1]], [["a", 2]])
    first = new_since_previous(tmp_path, train, None, first=True)
    assert first[LOOP_ENTRIES[0]][1] == "first checkpoint: all 3 episodes of 1 recordings are new\n- a"
    gone = new_since_previous(tmp_path, train, "v0", first=False)
    assert gone[LOOP_ENTRIES[0]][1].startswith("previous checkpoint's split v0 is gone: counted against nothing")
    (train.parent / "split.json").unlink()
    assert new_since_previous(tmp_path, train, "v0", first=False) == {
        LOOP_ENTRIES[0]: ("text", "unknown: this split has no split.json")}
