"""How numbers are shown to people (the UI, the console): rounded to what a reader can use."""

from __future__ import annotations

import math
import re


def sig(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant figures (0.10809369 -> 0.1081, 4.0524534 -> 4.052)."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


# An absolute path inside a sentence (not its trailing punctuation).
_PATH = re.compile(r"(?<![\w.:/~])/(?:[^\s/()\[\],;'\"]+/)+([^\s/()\[\],;'\"]*[^\s/()\[\],;'\".:])")


def shorten_paths(text: str) -> str:
    """Absolute paths in a sentence cut to their last part ('…/tiny_smolvla-1a2b3c4d-000200'): a pipeline home's
    path is one unbreakable word that widens a UI table past its pane. For sentences whose paths are given whole
    elsewhere (a path metadata entry, the report file)."""
    return _PATH.sub(lambda m: f"…/{m.group(1)}", text)
