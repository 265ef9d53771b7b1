"""Deterministic train/val assignment.

An episode's side is a hash of (salt, holdout unit) compared with `val_fraction`, where the unit is the episode
(`recording/episode`), the whole recording or the whole design. It depends on nothing else, so adding a recording
never moves an existing episode between train and val — evaluation numbers stay comparable across retrains.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from tatbot_pipeline.datasets.selection import RecordingEntry

Holdout = Literal["episode", "recording", "design"]
HOLDOUTS: tuple[str, ...] = ("episode", "recording", "design")


@dataclass(frozen=True)
class SplitConfig:
    """How episodes are assigned; every field is part of the split's version hash."""

    val_fraction: float = 0.2
    salt: str = "tatbot"
    holdout: Holdout = "episode"
    group_key: str = ""  # '' refuses mixed fps/stroke_length/features; else see selection.GROUP_KEYS
    group_value: str = ""  # which group to keep ('' = the one with the most episodes)
    # If hashing leaves val with fewer episodes, the train units closest to the threshold are moved over.
    # Only those top-ups can move when recordings are added; they are listed in the metadata.
    min_val_episodes: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        if self.holdout not in HOLDOUTS:
            raise ValueError(f"holdout={self.holdout!r}: use one of {HOLDOUTS}")


@dataclass
class Assignment:
    """Episodes per side, keyed by recording name, in ascending episode order."""

    train: dict[str, list[int]] = field(default_factory=dict)
    val: dict[str, list[int]] = field(default_factory=dict)
    topped_up: list[str] = field(default_factory=list)  # holdout units moved to val by min_val_episodes

    def side(self, name: str) -> dict[str, list[int]]:
        return {"train": self.train, "val": self.val}[name]

    def count(self, name: str) -> int:
        return sum(len(eps) for eps in self.side(name).values())


def unit_of(entry: RecordingEntry, episode: int, holdout: str) -> str:
    if holdout == "episode":
        return f"{entry.name}/{episode}"
    if holdout == "recording":
        return entry.name
    return f"design:{entry.design}"


def score(salt: str, unit: str) -> float:
    """Uniform in [0, 1), stable across machines and Python versions (unlike `hash`)."""
    digest = hashlib.sha256(f"{salt}\0{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(recordings: list[RecordingEntry], config: SplitConfig) -> Assignment:
    """Put every usable episode on one side; raise when train would be empty."""
    units: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for entry in recordings:
        for ep in entry.episodes:
            units[unit_of(entry, ep, config.holdout)].append((entry.name, ep))
    scores = {unit: score(config.salt, unit) for unit in units}
    val_units = {u for u, s in scores.items() if s < config.val_fraction}
    topped_up: list[str] = []
    if config.val_fraction > 0:
        candidates = sorted((u for u in units if u not in val_units), key=lambda u: (scores[u], u))
        while sum(len(units[u]) for u in val_units) < config.min_val_episodes and len(candidates) > 1:
            unit = candidates.pop(0)
            val_units.add(unit)
            topped_up.append(unit)
    out = Assignment(topped_up=topped_up)
    for unit, members in sorted(units.items()):
        side = out.val if unit in val_units else out.train
        for name, ep in members:
            side.setdefault(name, []).append(ep)
    for side in (out.train, out.val):
        for eps in side.values():
            eps.sort()
    if not out.train:
        raise ValueError(
            f"every episode hashed to val (holdout={config.holdout}, {len(units)} unit(s), "
            f"val_fraction={config.val_fraction}) — add recordings, lower val_fraction or change salt"
        )
    return out
