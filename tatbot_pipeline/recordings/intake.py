"""What the recordings sensor has already requested: a seen-map kept under the pipeline home, not in the cursor.

Dagster stores a sensor's cursor in every tick row. A cursor holding the whole seen-map (about 600 KB at 10,000
recordings) costs gigabytes a day, so the cursor holds only `<generation>:<sequence>` and the map lives in
`<home>/ingestion/seen-<generation>-<sequence>.json`.

- A tick that changes the map writes the next sequence and returns it as the new cursor. The file of the current
  cursor stays until a later tick proves the daemon committed the new one, so a lost tick re-reads the old map and
  decides again.
- No cursor (a fresh instance, or a cursor reset in the UI) starts a new generation with an empty map: every
  recording under the root is requested again, and Dagster's run keys skip what this instance already ran.
- A sensor cursor from before this module (the whole map as JSON) is taken over as the first map of a new generation,
  so an upgrade does not re-ingest the archive.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tatbot_pipeline.files import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenMap:
    """Recording name -> the signature it had when ingestion was last requested."""

    generation: str
    sequence: int
    seen: dict[str, str] = field(default_factory=dict)
    unsaved: bool = False  # taken over from an old cursor or lost from disk: write it even if nothing changes

    @property
    def cursor(self) -> str:
        return f"{self.generation}:{self.sequence}"


def _path(directory: Path, generation: str, sequence: int) -> Path:
    return directory / f"seen-{generation}-{sequence}.json"


def _new_generation() -> str:
    return uuid.uuid4().hex[:8]


def load_seen(directory: Path, cursor: str | None) -> SeenMap:
    """The seen-map the cursor points at (an empty new generation when there is no cursor)."""
    if not cursor:
        return SeenMap(_new_generation(), 0)
    if cursor.lstrip().startswith("{"):  # the cursor of older versions: the map itself
        return SeenMap(_new_generation(), 0, json.loads(cursor), unsaved=True)
    generation, _, text = cursor.partition(":")
    sequence = int(text or 0)
    path = _path(directory, generation, sequence)
    try:
        return SeenMap(generation, sequence, json.loads(path.read_text()))
    except FileNotFoundError:
        if sequence > 0:
            log.warning("%s missing (pipeline home wiped or changed?): requesting every recording again; run keys "
                        "skip the ones this instance already ingested", path)
        return SeenMap(generation, sequence, {}, unsaved=sequence > 0)


def save_seen(directory: Path, previous: SeenMap, seen: dict[str, str]) -> SeenMap:
    """Write `seen` as the next sequence of `previous`'s generation; prune files older than `previous`."""
    nxt = SeenMap(previous.generation, previous.sequence + 1, seen)
    write_atomic(_path(directory, nxt.generation, nxt.sequence), json.dumps(seen, separators=(",", ":"), sort_keys=True))
    for old in directory.glob(f"seen-{previous.generation}-*.json"):
        sequence = old.stem.rsplit("-", 1)[-1]
        if sequence.isdigit() and int(sequence) < previous.sequence:
            old.unlink(missing_ok=True)
    return nxt
