"""Dagster resources wrapping the plain settings objects, so paths are editable in the launchpad."""

from __future__ import annotations

import dagster as dg

from tatbot_pipeline.config import PipelineSettings


class PipelineResource(dg.ConfigurableResource):
    """Paths of the pipeline. Empty fields fall back to the environment (TATBOT_RECORDINGS_DIR, TATBOT_PIPELINE_HOME)."""

    recordings_dir: str = ""
    home: str = ""
    settle_seconds: float = -1.0

    @property
    def settings(self) -> PipelineSettings:
        return PipelineSettings.from_env(
            recordings_dir=self.recordings_dir or None,
            home=self.home or None,
            settle_seconds=self.settle_seconds if self.settle_seconds >= 0 else None,
        )


def default_resources() -> dict:
    return {"pipeline": PipelineResource()}
