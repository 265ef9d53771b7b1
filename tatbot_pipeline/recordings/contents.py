"""Load the parts of a recording that validation needs, turning every load failure into a finding.

Tables are read with pyarrow directly (one columnar read of the data parquet files), not by iterating a
LeRobotDataset frame by frame: validation must stay fast on recordings with hundreds of episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tatbot_pipeline.lerobot_tables import data_files, episodes_files, numpy_column, read_info, read_tables
from tatbot_pipeline.recordings.validation_report import Finding, Severity
from tatbot_pipeline.recordings.scan import recording_state
from tatbot_pipeline.scene_yaml import load_scene

SUPPORTED_VERSION = "v3.0"


@dataclass
class Frames:
    """The per-frame columns of a recording, as numpy arrays in file order."""

    episode_index: np.ndarray
    frame_index: np.ndarray
    timestamp: np.ndarray
    index: np.ndarray
    action: np.ndarray  # (n, 14)
    state: np.ndarray  # (n, 14)

    def episode(self, ep: int) -> np.ndarray:
        """Row positions of one episode."""
        return np.flatnonzero(self.episode_index == ep)


@dataclass
class Recording:
    path: Path
    info: dict | None = None
    episodes: pd.DataFrame | None = None
    frames: Frames | None = None
    scene: dict | None = None
    strokebatch_joints: np.ndarray | None = None
    findings: list[Finding] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # what rules learn on the way (offset paths), merged into the summary

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def fps(self) -> float:
        return float(self.info["fps"]) if self.info else 0.0

    @property
    def video_keys(self) -> list[str]:
        if not self.info:
            return []
        return [k for k, f in self.info.get("features", {}).items() if f.get("dtype") == "video"]

    @property
    def stroke_length(self) -> int | None:
        value = (self.scene or {}).get("stroke_length")
        return int(value) if isinstance(value, (int, float)) else None


LEGACY_LAYOUT = (
    "legacy LeRobot layout (meta_data/, LeRobot before v2.0): lerobot has no converter for it — convert a copy "
    "outside the recordings root with an older lerobot (to v2.1, which the pipeline converts itself) or re-record"
)


def unsupported_version_message(path: Path, version: str) -> str:
    if version == "v2.1":
        return ("LeRobot dataset format v2.1 (tatbot recorded v2.1 until 2025-09-15): validation converts a copy "
                "under the pipeline home automatically (TATBOT_PIPELINE_HOME/converted) — this run was given no "
                "place for the copy; the recording itself is never converted in place")
    return f"LeRobot dataset format {version}; the pipeline reads {SUPPORTED_VERSION} and converts v2.1"


def parquet_has_footer(path: Path) -> bool:
    """A parquet file ends with the magic bytes PAR1 only once its writer closed it (upstream lerobot: finalize())."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def _unclosed(path: Path, files: list[Path], settle_seconds: float, now: float) -> Finding:
    """Footerless parquet: still being written while it keeps changing, a recording never finalized after that."""
    names = ", ".join(str(f.relative_to(path)) for f in files[:3])
    newest = max(f.stat().st_mtime for f in files)
    if now - newest < settle_seconds:
        return Finding("finalized", Severity.INCOMPLETE,
                       f"{names} has no parquet footer yet and changed {now - newest:.0f} s ago — still being written")
    return Finding("finalized", Severity.ERROR,
                   f"{names} has no parquet footer (recording never finalized: LeRobotDataset.finalize() did not run) — "
                   "re-run the recorder with resume, or remove the dir from the recordings root by hand")


def load_recording(path: Path, settle_seconds: float, now: float) -> Recording:
    """Read metadata, tables, scene and strokebatch; missing or broken pieces become findings, never exceptions."""
    rec = Recording(path=path)
    if not path.is_dir():
        rec.findings.append(Finding("layout", Severity.ERROR, f"{path} does not exist or is not a directory"))
        return rec
    _load_scene(rec)  # first: it says how long strokes should be
    if _load_info(rec, settle_seconds, now) and _load_tables(rec, settle_seconds, now):
        _load_tatbot_files(rec)
    return rec


def _load_scene(rec: Recording) -> None:
    scene_path = rec.path / "scene.yaml"
    if not scene_path.exists():
        rec.findings.append(Finding("scene", Severity.ERROR, "scene.yaml missing — cannot tell stroke_length or design"))
        return
    try:
        rec.scene = load_scene(scene_path)
    except Exception as e:  # boundary: any parse problem is a verdict, not a traceback
        rec.findings.append(Finding("scene", Severity.ERROR, f"scene.yaml unreadable: {type(e).__name__}: {e}"))


def _load_info(rec: Recording, settle_seconds: float, now: float) -> bool:
    """meta/info.json of a LeRobot v3.0 dataset; False (with the finding) when there is none to go on with."""
    path, add = rec.path, rec.findings.append
    info_path = path / "meta" / "info.json"
    if not info_path.exists() and (path / "meta_data").is_dir():
        add(Finding("format_version", Severity.ERROR, LEGACY_LAYOUT))
        return False
    if not info_path.exists():
        if not recording_state(path).settled(settle_seconds, now):
            add(Finding("finalized", Severity.INCOMPLETE, "meta/info.json not written yet — recording in progress"))
        elif not (path / "meta").exists():
            # stroke_tool writes scene.yaml, strokes.yaml, arrays/ and the strokebatch before the robot connects: a
            # failed connect leaves this, a session in which nothing was recorded (and nothing went wrong with data).
            add(Finding("layout", Severity.EMPTY, "no strokes recorded (no meta/) — the robot never connected?"))
        else:
            add(Finding("layout", Severity.ERROR, "meta/info.json missing — not a LeRobot dataset"))
        return False
    try:
        rec.info = read_info(path)
    except (OSError, ValueError) as e:
        add(Finding("metadata", Severity.ERROR, f"meta/info.json unreadable: {e}"))
        return False
    version = str(rec.info.get("codebase_version", "?"))
    if version != SUPPORTED_VERSION:
        add(Finding("format_version", Severity.ERROR, unsupported_version_message(path, version)))
        return False
    return True


def _load_tables(rec: Recording, settle_seconds: float, now: float) -> bool:
    """The episodes table and the frames; a writer still open (no parquet footer) stops here, fresh or stale."""
    path, add = rec.path, rec.findings.append
    episode_paths = episodes_files(path)
    if not episode_paths:
        if not recording_state(path).settled(settle_seconds, now):
            add(Finding("finalized", Severity.INCOMPLETE, "meta/episodes not written yet — recording in progress"))
        else:
            add(Finding("finalized", Severity.ERROR, "meta/episodes missing (recording never finalized?) — re-run "
                        "stroke_tool with resume, or remove the dir from the recordings root by hand"))
        return False
    data_paths = data_files(path)
    open_files = [f for f in episode_paths + data_paths if not parquet_has_footer(f)]
    if open_files:
        add(_unclosed(path, open_files, settle_seconds, now))
        return False
    try:
        rec.episodes = read_tables(episode_paths).to_pandas().reset_index(drop=True)
    except Exception as e:  # boundary: a corrupt parquet and friends
        add(Finding("finalized", Severity.ERROR, f"meta/episodes unreadable: {type(e).__name__}: {e}"))
        return False
    if not data_paths:
        add(Finding("layout", Severity.ERROR, "data/ has no parquet files"))
        return False
    try:
        columns = ["episode_index", "frame_index", "timestamp", "index", "action", "observation.state"]
        table = read_tables(data_paths, columns)
        rec.frames = Frames(
            episode_index=table.column("episode_index").to_numpy(),
            frame_index=table.column("frame_index").to_numpy(),
            timestamp=table.column("timestamp").to_numpy().astype(np.float64),
            index=table.column("index").to_numpy(),
            action=numpy_column(table.column("action")).astype(np.float32, copy=False),
            state=numpy_column(table.column("observation.state")).astype(np.float32, copy=False),
        )
    except Exception as e:  # boundary
        add(Finding("metadata", Severity.ERROR, f"data parquet unreadable: {type(e).__name__}: {e}"))
    return True


def _load_tatbot_files(rec: Recording) -> None:
    """strokes.yaml and strokebatch.safetensors, which stroke_tool writes before it records anything."""
    path, add = rec.path, rec.findings.append
    for required in ("strokes.yaml", "strokebatch.safetensors"):
        if not (path / required).exists():
            add(Finding("layout", Severity.ERROR, f"{required} missing — stroke_tool writes it before recording"))
    if (path / "strokebatch.safetensors").exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path / "strokebatch.safetensors"), framework="numpy") as f:
                rec.strokebatch_joints = f.get_tensor("joints")
        except Exception as e:  # boundary
            add(Finding("strokebatch", Severity.ERROR, f"strokebatch.safetensors unreadable: {e}"))
