"""How every asset's metadata reads in the UI: a one-line `summary` first, numbers to 4 significant figures with
their unit in the key (`_rad`, `_ms`, `_s`, `_frames`), long JSON last. Keys stay short (about 18 characters) and
tables narrow: the asset page's metadata table is as wide as its widest row, and at 1600 px the pane has no room to
spare beside a checkpoint's 64-hex digest. Numbers stay numbers, so Dagster's Plots tab
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


def gate_table(criteria, beside=None, names: tuple[str, str] = ("", "")) -> dg.MetadataValue:
    """A gate's criteria as one table (criterion, measured, limit, verdict): read at a glance, no wide keys.

    `beside`: the same criteria judged by another gate on the same measurements (the lab's, when the run set its own
    limits), as two more columns, so relaxed limits are never shown without the ones they relax; `names` head the two
    limit columns. A measurement that depends on the limit (strokes off the path) is given with that gate's verdict."""
    if beside is None:
        rows = ["| criterion | measured | limit | |", "|---|---|---|---|"]
        rows += [f"| {_criterion(c)} | {_measured(c)} | {_limit(c)} | {_verdict(c)} |" for c in criteria]
        return dg.MetadataValue.md("\n".join(rows))
    rows = [f"| criterion | measured | {names[0] or 'limit'} | | {names[1] or 'other limit'} | |",
            "|---|---|---|---|---|---|"]
    for c, other in zip(criteria, beside):
        differs = [_measured(other)] if _measured(other) != _measured(c) else []
        differs += [other.detail] if other.detail and other.detail != c.detail else []
        rows.append(f"| {_criterion(c)} | {_measured(c)} | {_limit(c)} | {_verdict(c)} | {_limit(other)} | "
                    f"{_verdict(other)}{': ' + ', '.join(differs) if differs else ''} |")
    return dg.MetadataValue.md("\n".join(rows))


def _unit(c) -> str:
    return f" {c.unit}" if c.unit else ""


def _criterion(c) -> str:
    return f"{c.name}{f' ({c.detail})' if c.detail else ''}"


def _measured(c) -> str:
    return "—" if c.measured is None else f"{c.measured:.4g}{_unit(c)}"


def _limit(c) -> str:
    return "—" if c.limit is None else f"≤ {c.limit:.4g}{_unit(c)}"


def _verdict(c) -> str:
    return "pass" if c.passed else "**FAIL**"


def named_gate(headline: str, gate_name: str) -> str:
    """'OPEN-LOOP GATE PASSED (the demo's relaxed gate): …': limits set for one run say whose they are."""
    if not gate_name:
        return headline
    verdict, _, rest = headline.partition(":")
    return f"{verdict} ({gate_name}):{rest}"


GATE_NAME_HELP = ("a name for the limits set here, shown with the verdict (e.g. \"the demo's relaxed gate\"); "
                  "empty: the lab's gate")
