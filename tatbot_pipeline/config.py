"""One settings object for paths and knobs; environment overrides live here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RECORDINGS_DIR = Path("/nfs/tatbot/recordings")
DEFAULT_PIPELINE_HOME = Path(".tatbot")


@dataclass(frozen=True)
class PipelineSettings:
    """Where recordings are read from and where everything the pipeline makes is written.

    The recordings root is read-only to the pipeline; all outputs go under `home`.
    """

    recordings_dir: Path = DEFAULT_RECORDINGS_DIR
    home: Path = DEFAULT_PIPELINE_HOME
    # A recording whose files changed less than this long ago may still be written by stroke_tool.
    settle_seconds: float = 60.0

    @classmethod
    def from_env(cls, **overrides) -> "PipelineSettings":
        env = os.environ
        values = {
            "recordings_dir": Path(env.get("TATBOT_RECORDINGS_DIR", DEFAULT_RECORDINGS_DIR)),
            "home": Path(env.get("TATBOT_PIPELINE_HOME", DEFAULT_PIPELINE_HOME)).absolute(),
            "settle_seconds": float(env.get("TATBOT_SETTLE_SECONDS", 60.0)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["recordings_dir"] = Path(values["recordings_dir"])
        values["home"] = Path(values["home"]).absolute()
        return cls(**values)

    @property
    def splits_dir(self) -> Path:
        return self.home / "splits"

    @property
    def train_dir(self) -> Path:
        return self.home / "outputs" / "train"

    @property
    def eval_dir(self) -> Path:
        return self.home / "outputs" / "eval"

    @property
    def validation_dir(self) -> Path:
        """One ValidationReport JSON per recording: what the split reads to pick usable episodes."""
        return self.home / "validation"

    def report_path(self, recording: str) -> Path:
        return self.validation_dir / f"{recording}.json"

    @property
    def intake_dir(self) -> Path:
        """The recordings sensor's seen-map (recordings/intake.py); its cursor only points at a file here."""
        return self.home / "ingestion"

    @property
    def converted_dir(self) -> Path:
        """Recordings converted from older LeRobot formats (never converted in place)."""
        return self.home / "converted"

    @property
    def hf_home(self) -> Path:
        return self.home / "hf"
