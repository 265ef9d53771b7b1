"""Checks that take seconds before a training that takes hours: the split's files are readable and consistent, and
the output dir can be written.

Without them, a truncated parquet in the split fails 30 s into lerobot-train as a `DatasetGenerationError` that
names no file, and an unwritable output dir fails at the first checkpoint save (`save_freq` steps later: hours on a
GPU with the production presets).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq


class PreflightFailed(RuntimeError):
    """The split or the output dir cannot work; the message names the file. Retrying does not help."""


def preflight(dataset_root: Path, run_dir: Path) -> None:
    """Raise PreflightFailed naming the first file that would make lerobot-train fail: every parquet file of the
    split decodes, the episodes' data and video files exist and agree with the metadata (the merge's own
    `check_merged`), and `run_dir`'s parent takes a file."""
    from tatbot_pipeline.datasets.merge import check_merged

    dataset_root = Path(dataset_root)
    for path in sorted(dataset_root.rglob("*.parquet")):
        try:
            pq.read_table(path)
        except Exception as e:  # boundary: any decoding error names the file
            raise PreflightFailed(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); rebuild the "
                                  "split (materialize training_splits)") from e
    try:
        problems = check_merged(dataset_root)
    except Exception as e:  # boundary: an unreadable meta file or video
        raise PreflightFailed(f"{dataset_root}: the split's metadata cannot be read ({type(e).__name__}: {e}); "
                              "rebuild the split (materialize training_splits)") from e
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PreflightFailed(f"{dataset_root}: the split is inconsistent: {shown}; rebuild the split "
                              "(materialize training_splits)")
    writable_dir(Path(run_dir).parent)


def writable_dir(directory: Path) -> None:
    """Create `directory` if needed and write (then remove) a file in it; PreflightFailed names it otherwise."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".writable-"):
            pass
    except OSError as e:
        raise PreflightFailed(f"{directory}: the training output dir is not writable ({e.strerror or e}); fix its "
                              "permissions or point TATBOT_PIPELINE_HOME at a writable disk") from e
