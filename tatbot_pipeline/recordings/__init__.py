"""Stroke recordings: naming, scene.yaml, scanning the root, and validation. No dagster here."""
