"""How every asset's metadata reads in the UI: a one-line `summary` first, numbers to 4 significant figures with
their unit in the key (`_rad`, `_ms`, `_s`, `_frames`), long JSON last. Numbers stay numbers, so Dagster's Plots tab
trends them across materializations."""

from __future__ import annotations

from typing import Any

import dagster as dg

from tatbot_pipeline.display import sig


def number(value: float | int | None) -> dg.MetadataValue:
    """An int stays an int; a float is rounded; None (not measured, not predicted) reads as n/a."""
    if value is None:
        return dg.MetadataValue.text("n/a")
    if isinstance(value, bool) or isinstance(value, int):
        return dg.MetadataValue.int(int(value))
    return dg.MetadataValue.float(sig(value))


def headline_first(summary: str, entries: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata dict in reading order: `summary`, then `entries`, then `last` (long JSON, config, plots)."""
    return {"summary": dg.MetadataValue.text(summary), **entries, **(last or {})}


def to_metadata(entries: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """A core report's `name -> (kind, value)` entries (training/training_report.py) as Dagster metadata values."""
    kinds = {"text": dg.MetadataValue.text, "int": dg.MetadataValue.int, "float": dg.MetadataValue.float,
             "path": dg.MetadataValue.path, "md": dg.MetadataValue.md, "json": dg.MetadataValue.json,
             "url": dg.MetadataValue.url}
    return {name: kinds[kind](value) for name, (kind, value) in entries.items()}
