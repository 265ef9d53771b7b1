"""Find recordings under the root cheaply and decide whether they have settled.

The sensor calls `scan_root` every tick over possibly thousands of recordings, so it only stats a handful of paths
per recording (the root dir, meta/, logs/, data/ and their newest files) and never opens a file. The deep content
fingerprint (`content_fingerprint`) is computed by the per-recording asset instead.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tatbot_pipeline.recordings.naming import parse_recording_name

# stroke_tool touches these on every episode: the root (new files), logs/ (one new log per episode),
# meta/info.json (rewritten by save_episode), the data parquet (appended) and the episodes parquet (finalize).
_WATCHED = ("", "logs", "meta/info.json", "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet")
EPISODES_PARQUET = "meta/episodes/chunk-000/file-000.parquet"


@dataclass(frozen=True)
class RecordingState:
    """What one tick knows about a recording dir without reading it."""

    name: str
    path: Path
    newest_mtime: float
    finalized: bool  # the episodes parquet exists: LeRobotDataset.finalize() (or a flush) has run
    signature: str  # changes whenever any watched path changes

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        return ((now if now is not None else time.time()) - self.newest_mtime) >= settle_seconds


def recording_state(path: Path) -> RecordingState:
    parts = []
    newest = 0.0
    for rel in _WATCHED:
        try:
            st = os.stat(path / rel) if rel else os.stat(path)
        except FileNotFoundError:
            parts.append(f"{rel}:-")
            continue
        newest = max(newest, st.st_mtime)
        parts.append(f"{rel}:{st.st_mtime_ns}:{st.st_size}")
    signature = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
    return RecordingState(
        name=path.name,
        path=path,
        newest_mtime=newest,
        finalized=os.path.exists(path / EPISODES_PARQUET),
        signature=signature,
    )


def scan_root(root: Path) -> list[RecordingState]:
    """Every `stroke-*` recording dir directly under `root`, sorted by name. Other entries are ignored."""
    if not root.is_dir():
        return []
    states = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=True) and parse_recording_name(entry.name) is not None:
                states.append(recording_state(Path(entry.path)))
    return sorted(states, key=lambda s: s.name)


def content_fingerprint(path: Path) -> str:
    """A fingerprint of a recording's content: file names and sizes, plus the bytes of its metadata and tables.

    Modification times are left out so a copy of a recording has the same fingerprint (lineage follows content).
    """
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    hashed_suffixes = {".json", ".parquet", ".yaml", ".safetensors", ".txt"}
    for p in files:
        rel = p.relative_to(path).as_posix()
        h.update(f"{rel}\0{p.stat().st_size}\0".encode())
        if p.suffix in hashed_suffixes:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(frozen=True)
class IngestionPlan:
    """One sensor tick's decision: which recordings to (re)ingest, which are still settling."""

    ready: list[RecordingState]  # settled and new or changed since last seen
    settling: list[str]  # touched within the settle time: maybe still being written
    seen: dict[str, str]  # name -> signature, to remember for the next tick


def plan_ingestion(
    states: list[RecordingState], seen: dict[str, str], settle_seconds: float, now: float, limit: int = 100
) -> IngestionPlan:
    """Pick settled recordings that are new or changed; at most `limit` per tick so a huge backlog drains gradually.

    A recording is ingested only once it has been quiet for `settle_seconds`, finalized or not: a finalized one
    validates normally, and one that stays unfinalized gets a `fail` verdict the user can see instead of vanishing.
    """
    ready, settling = [], []
    new_seen = dict(seen)
    for state in states:
        if seen.get(state.name) == state.signature:
            continue
        if not state.settled(settle_seconds, now):
            settling.append(state.name)
            continue
        if len(ready) < limit:
            ready.append(state)
            new_seen[state.name] = state.signature
    return IngestionPlan(ready=ready, settling=settling, seen=new_seen)
