"""Episode selection, deterministic train/val assignment and merged LeRobot datasets (no dagster here)."""
