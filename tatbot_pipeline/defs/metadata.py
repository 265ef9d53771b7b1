"""How every asset's metadata reads in the UI: a one-line `summary` first, numbers to 4 significant figures with
their unit in the key (`_rad`, `_ms`, `_s`, `_frames`), long JSON last. Numbers stay numbers, so Dagster's Plots tab
trends them across materializations."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg


def sig(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant figures (0.10809369 -> 0.1081, 4.0524534 -> 4.052)."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


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
