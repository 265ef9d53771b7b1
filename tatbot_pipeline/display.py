"""How numbers are shown to people (the UI, the console): rounded to what a reader can use."""

from __future__ import annotations

import math


def sig(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant figures (0.10809369 -> 0.1081, 4.0524534 -> 4.052)."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))
