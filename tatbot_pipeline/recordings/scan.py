"""Find recordings under the root cheaply and decide whether they have settled.

The sensor calls `scan_root` every tick over possibly tens of thousands of recordings, so it only stats five paths
per recording (the dir, logs/, meta/info.json and the data and episodes parquet files) with plain string paths, and
never opens a file. The deep content fingerprint (`content_fingerprint`) is computed by the per-recording asset.

A root that is missing or unreadable raises `RecordingsRootError`: an NFS mount that went away must never look like
"every recording was removed".
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tatbot_pipeline.recordings.naming import PREFIX, parse_recording_name

EPISODES_PARQUET = "meta/episodes/chunk-000/file-000.parquet"
# stroke_tool touches these on every episode: the dir (new files), logs/ (one new log per episode),
# meta/info.json (rewritten by save_episode), the data parquet (appended) and the episodes parquet (finalize).
# The labels are part of the signature (and so of run keys): keep them as they are.
_WATCHED = ("", "logs", "meta/info.json", "data/chunk-000/file-000.parquet", EPISODES_PARQUET)
_SUFFIXES = tuple((rel, "/" + rel if rel else "") for rel in _WATCHED)


class RecordingsRootError(RuntimeError):
    """The recordings root cannot be listed (missing, unreadable, or emptied): nothing can be concluded from it."""


@dataclass(frozen=True)
class RecordingState:
    """What one tick knows about a recording dir without reading it."""

    name: str
    dir: str  # the recording dir as a string: building a Path per recording costs more than its five stats
    newest_mtime: float
    finalized: bool  # the episodes parquet exists: LeRobotDataset.finalize() (or a flush) has run
    signature: str  # changes whenever any watched path changes

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        return ((now if now is not None else time.time()) - self.newest_mtime) >= settle_seconds


def recording_state(path: Path | str, name: str | None = None) -> RecordingState:
    """Stat the watched paths of one recording. A path that cannot be read (other than missing) changes the
    signature, so the recording is ingested again and its validation says what is wrong."""
    base = os.fspath(path)
    parts = []
    newest = 0.0
    for label, suffix in _SUFFIXES:  # the tick's hot loop: 5 stats, no Path objects
        try:
            st = os.stat(base + suffix)
        except FileNotFoundError:
            parts.append(label + ":-")
            continue
        except OSError as exc:
            parts.append(f"{label}:!{exc.errno}")
            continue
        if st.st_mtime > newest:
            newest = st.st_mtime
        parts.append(f"{label}:{st.st_mtime_ns}:{st.st_size}")
    finalized = not parts[-1].endswith(":-")  # the episodes parquet is watched last
    signature = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
    return RecordingState(name or os.path.basename(base), base, newest, finalized, signature)


@functools.lru_cache(maxsize=1 << 17)
def _is_recording_name(name: str) -> bool:
    """Cached across ticks: the date parse costs as much as the five stats of a recording."""
    return parse_recording_name(name) is not None


def scan_root(root: Path) -> list[RecordingState]:
    """Every `stroke-*` recording dir directly under `root`, sorted by name. Other entries are ignored.

    Raises RecordingsRootError when `root` is missing, not a directory, or cannot be listed.
    """
    states = []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=True):
                    continue
                if _is_recording_name(name):
                    states.append(recording_state(entry.path, name))
    except FileNotFoundError as exc:
        raise RecordingsRootError(f"{root}: recordings root not found (NFS mount missing? TATBOT_RECORDINGS_DIR "
                                  "wrong?) — nothing ingested, nothing treated as removed") from exc
    except NotADirectoryError as exc:
        raise RecordingsRootError(f"{root}: recordings root is not a directory — set TATBOT_RECORDINGS_DIR") from exc
    except OSError as exc:  # PermissionError, ESTALE/EIO from a dead NFS mount, ...
        raise RecordingsRootError(f"{root}: recordings root unreadable ({exc.strerror or exc}) — nothing ingested, "
                                  "nothing treated as removed; check the mount and its permissions") from exc
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


# Ingestion runs requested per tick. Dagster resolves each partitioned run request against the tick's new partitions
# (cost ~ requests x new keys) and the daemon checks every new key one by one, so a 10,000-dir backlog goes in
# chunks: ten ticks of ~0.7 s instead of one tick of ~25 s. The scan itself is cheap enough to repeat.
PER_TICK = 1000


@dataclass(frozen=True)
class IngestionPlan:
    """One sensor tick's decision: which recordings to (re)ingest, which wait, which are gone."""

    ready: list[RecordingState]  # settled and new or changed since last seen: request these now
    waiting: int  # settled and new or changed, beyond this tick's PER_TICK: the next ticks take them
    settling: list[str]  # touched within the settle time: maybe still being written
    removed: list[str]  # seen before, no longer under the root
    seen: dict[str, str] = field(default_factory=dict)  # name -> signature, to remember for the next tick

    @property
    def changed(self) -> bool:
        return bool(self.ready or self.removed)


def plan_ingestion(
    states: list[RecordingState], seen: Mapping[str, str], settle_seconds: float, now: float, limit: int = PER_TICK
) -> IngestionPlan:
    """Pick settled recordings that are new or changed (at most `limit`); list the ones that disappeared.

    A recording is ingested only once it has been quiet for `settle_seconds`, finalized or not: a finalized one
    validates normally, and one that stays unfinalized gets a `fail` verdict the user can see instead of vanishing.
    The caller decides what an empty scan means (`RecordingsRootError` when recordings were seen before).
    """
    ready, settling, waiting = [], [], 0
    for state in states:
        if seen.get(state.name) == state.signature:
            continue
        if not state.settled(settle_seconds, now):
            settling.append(state.name)
        elif len(ready) < limit:
            ready.append(state)
        else:
            waiting += 1
    present = {s.name for s in states}
    removed = sorted(name for name in seen if name not in present)
    new_seen = dict(seen)
    for name in removed:
        del new_seen[name]
    new_seen.update((s.name, s.signature) for s in ready)
    return IngestionPlan(ready=ready, waiting=waiting, settling=settling, removed=removed, seen=new_seen)
