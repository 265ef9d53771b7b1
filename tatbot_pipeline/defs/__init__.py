"""The Dagster skin: each module holds one concern and exports its own `defs`; definitions.py merges them."""

# Shown on every asset in the UI; the team that answers for the pipeline.
OWNERS = ["team:tatbot"]
