"""One real tiny training run per session, shared by the runner, health and resume tests (each run costs ~20 s)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tatbot_pipeline.training.presets import TrainOptions
from tatbot_pipeline.training.runner import TrainingRun, train_policy
from tatbot_pipeline.training.tiny import ensure_tiny_smolvlm, tiny_smolvlm_dir

STEPS = 6


@pytest.fixture(scope="session")
def train_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("train_home")
    ensure_tiny_smolvlm(tiny_smolvlm_dir(home))
    return home


@pytest.fixture(scope="session")
def train_split(pristine_recording: Path, train_home: Path) -> Path:
    """The synthetic camera recording stands in for splits/latest/train (a recording is a LeRobot dataset)."""
    split = train_home / "splits" / "v1" / "train"
    shutil.copytree(pristine_recording, split)
    return split


@pytest.fixture(scope="session")
def trained_run(train_home: Path, train_split: Path) -> tuple[TrainingRun, list[str]]:
    """(the run, every line its callback received)."""
    lines: list[str] = []
    run = train_policy("tiny_smolvla", train_split, train_home / "outputs" / "train" / "fresh", train_home / "hf",
                       TrainOptions(steps=STEPS, save_freq=3), models_home=train_home, on_line=lines.append)
    return run, lines
