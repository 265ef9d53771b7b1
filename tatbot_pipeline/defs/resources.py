"""Dagster resources wrapping the plain settings objects, so paths are editable in the launchpad."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from tatbot_pipeline.config import PipelineSettings


class PipelineResource(dg.ConfigurableResource):
    """Where the pipeline reads and writes. Empty fields come from the environment (config.py: PipelineSettings)."""

    recordings_dir: str | None = Field(None, description="the recordings root, read only (empty: "
                                       "TATBOT_RECORDINGS_DIR, default /nfs/tatbot/recordings)")
    home: str | None = Field(None, description="the pipeline home, where everything made goes (empty: "
                             "TATBOT_PIPELINE_HOME, default <repo>/.tatbot)")
    settle_seconds: float | None = Field(None, description="a recording changed more recently than this is still "
                                         "being written (empty: TATBOT_SETTLE_SECONDS, default 60)")

    @property
    def settings(self) -> PipelineSettings:
        return PipelineSettings.from_env(recordings_dir=self.recordings_dir, home=self.home,
                                         settle_seconds=self.settle_seconds)


    @classmethod
    def of(cls, settings: PipelineSettings, **fields) -> "PipelineResource":
        """The resource for settings a caller already holds (the demo's): its paths given, not read from the
        environment again."""
        return cls(recordings_dir=str(settings.recordings_dir), home=str(settings.home), **fields)


def default_resources() -> dict:
    return {"pipeline": PipelineResource()}
