"""LeRobot v2.1 recordings (tatbot before 2025-09-15) converted to v3.0 copies under the pipeline home.

lerobot's own converter (`lerobot.scripts.convert_dataset_v21_to_v30.convert_dataset`) works in place and
only knows the LeRobot parts (meta/, data/, videos/), so the recording is copied to a scratch dir under
`converted_dir`, converted there (offline: a local root never reaches the Hub), and tatbot's side files (scene.yaml,
strokes.yaml, arrays/, strokebatch.safetensors, logs/, episode_NNNNNN/) are copied next to the result. The
result is then given the layout tatbot's current recorder writes (`recorder_layout`), so it reads like the
recordings made since. The copy replaces `<converted_dir>/<name>` in one rename and carries `conversion.json` (source path, source fingerprint,
converter) for lineage. A copy whose source fingerprint is unchanged is reused, so validation re-runs are cheap;
a resumed v2.1 session (new fingerprint) is converted again. Nothing is ever written under the recordings root.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tatbot_pipeline.lerobot_tables import data_files, episodes_files, read_info
from tatbot_pipeline.recordings.scan import content_fingerprint

log = logging.getLogger(__name__)

CONVERTIBLE = "v2.1"
LINEAGE_FILE = "conversion.json"
CONVERTER = "lerobot.scripts.convert_dataset_v21_to_v30.convert_dataset"
_LEROBOT_PARTS = {"meta", "data", "videos", "images"}


@dataclass(frozen=True)
class Conversion:
    """A v3.0 copy of a v2.1 recording and where it came from."""

    source: Path
    copy: Path
    source_version: str
    source_fingerprint: str
    reused: bool

    def lineage(self) -> dict:
        return {"source": str(self.source), "source_codebase_version": self.source_version,
                "source_fingerprint": self.source_fingerprint, "copy": str(self.copy), "converter": CONVERTER}


def codebase_version(path: Path) -> str | None:
    """`codebase_version` from meta/info.json, None when there is no readable info.json."""
    try:
        return str(read_info(path).get("codebase_version"))
    except (OSError, ValueError, AttributeError):
        return None


def needs_conversion(path: Path) -> bool:
    return codebase_version(path) == CONVERTIBLE


def converted_copy(source: Path, converted_dir: Path) -> Conversion:
    """The up-to-date v3.0 copy of `source` under `converted_dir`, converting it first when needed.

    Raises ValueError when `converted_dir` lies inside the source's recordings root, and lets the converter's own
    exceptions through (the caller turns them into a finding).
    """
    source, converted_dir = Path(source).absolute(), Path(converted_dir).absolute()
    if converted_dir.resolve().is_relative_to(source.parent.resolve()):
        raise ValueError(f"{converted_dir} is inside the recordings root {source.parent}: the pipeline never writes there")
    converted_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = content_fingerprint(source)
    copy = converted_dir / source.name
    with open(converted_dir / f".{source.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a sensor run and a CLI run may convert the same recording at once
        if _lineage(copy).get("source_fingerprint") == fingerprint and codebase_version(copy) == "v3.0":
            return Conversion(source, copy, CONVERTIBLE, fingerprint, reused=True)
        log.info("converting %s (LeRobot %s) to v3.0 at %s", source, CONVERTIBLE, copy)
        with tempfile.TemporaryDirectory(dir=converted_dir, prefix=f".work-{source.name}-") as work:
            result = _convert(source, Path(work))
            conversion = Conversion(source, copy, CONVERTIBLE, fingerprint, reused=False)
            lineage = {**conversion.lineage(), "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "lerobot_version": _lerobot_version()}
            (result / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2) + "\n")
            _replace(result, copy, Path(work))
    return conversion


def _convert(source: Path, work: Path) -> Path:
    """Copy, convert with lerobot (in place, inside `work`), add tatbot's side files; returns the v3.0 dir."""
    from lerobot.scripts.convert_dataset_v21_to_v30 import convert_dataset

    root = work / "tatbot" / source.name
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("images"))  # the image writer's scratch dir
    with _converter_output_to_log(source.name):
        convert_dataset(repo_id=f"tatbot/{source.name}", root=root, push_to_hub=False, force_conversion=True)
    recorder_layout(root)
    for entry in source.iterdir():
        if entry.name in _LEROBOT_PARTS:
            continue
        target = root / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    return root


@contextlib.contextmanager
def _converter_output_to_log(name: str):
    """The converter prints and draws its own tqdm bars (and HF datasets' `Map`/`Generating train split` ones) on
    stdout/stderr, which are the CLI's (`validate --json` owns stdout): they go to this module's log at debug level
    instead, and HF datasets draws none while it runs. lerobot warns that a v2.1 info.json has keys v3.0 drops
    (`total_chunks`, `total_videos`): true of every v2.1 recording, so not worth a warning line per validation."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    info_log = logging.getLogger("lerobot.datasets.utils")
    info_level = info_log.level
    info_log.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield
    finally:
        info_log.setLevel(info_level)
        if bars_were_on:
            datasets.enable_progress_bars()
        if captured.getvalue().strip():
            log.debug("lerobot's converter on %s said:\n%s", name, captured.getvalue().strip())


def recorder_layout(root: Path) -> None:
    """Align lerobot's v3.0 output with what tatbot's fork writes since 2025-09-15, which it otherwise differs from in
    three ways: the converter adds `fps` to every non-video feature in info.json (the fork does not), stores
    `action`/`observation.state` as list<float> and timestamps as float (the fork's pandas writes give list<double>
    and double), and keeps the v2.1 fork's per-episode `condition` column in meta/episodes (the same stroke dicts as
    strokes.yaml; the v3.0 fork drops it). Values are unchanged.

    The split no longer needs this (selection ignores a per-feature `fps`, the merge casts every source to the first
    one's schema and keeps only the episodes columns all sources share: copies converted before this step existed
    are still reused and merge; tests/datasets/test_mixed_eras.py). It stays so a converted copy's report summary,
    and a split whose first source is a copy, look the same as with recordings the fork made itself.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    info_path = root / "meta" / "info.json"
    info = read_info(root)
    for feature in info["features"].values():
        if feature.get("dtype") != "video":
            feature.pop("fps", None)
    info_path.write_text(json.dumps(info, indent=4, ensure_ascii=False))
    for path in data_files(root):
        table = pq.read_table(path)
        fields = [pa.field(f.name, pa.list_(pa.float64())) if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)
                  else pa.field(f.name, pa.float64()) if pa.types.is_floating(f.type) else f for f in table.schema]
        pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)
    for path in episodes_files(root):
        table = pq.read_table(path)
        if "condition" in table.column_names:
            pq.write_table(table.drop_columns(["condition"]).replace_schema_metadata(None), path)


def _replace(new: Path, copy: Path, work: Path) -> None:
    """Put `new` at `copy`; an outdated copy is moved aside first so readers never see a half-replaced dir."""
    if copy.exists():
        copy.rename(work / "outdated")
    new.rename(copy)


def _lineage(copy: Path) -> dict:
    try:
        return json.loads((copy / LINEAGE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _lerobot_version() -> str:
    from importlib.metadata import version

    return version("lerobot")
