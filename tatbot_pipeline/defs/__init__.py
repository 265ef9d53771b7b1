"""The Dagster skin: each module holds one concern and exports its own `defs`; definitions.py merges them."""
