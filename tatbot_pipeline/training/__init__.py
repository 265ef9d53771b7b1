"""Policy training: presets, the lerobot-train runner, metrics and health verdicts (no dagster here)."""
