"""The Dagster skin: each module holds one concern and exports its `defs`, or `build(settings)` where the settings
shape it; definitions.py merges them."""

import contextlib
import warnings
from collections.abc import Iterator

import dagster as dg

# Shown on every asset in the UI; the team that answers for the pipeline.
OWNERS = ["team:tatbot"]


@contextlib.contextmanager
def partitioned_checks() -> Iterator[None]:
    """Partitioned asset checks are a preview feature of dagster 1.13: defined in this block, used knowingly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield
