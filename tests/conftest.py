"""Shared fixtures: synthetic recordings are built once per session and copied per test before defects go in."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

# LeRobotDataset reads parquet through HF datasets, which caches arrow files under HF_DATASETS_CACHE (read when
# `datasets` is imported): the suite's go to a temporary dir of this process, never ~/.cache.
_HF_DATASETS_CACHE = tempfile.mkdtemp(prefix="tatbot-tests-hf-datasets-")
os.environ.setdefault("HF_DATASETS_CACHE", _HF_DATASETS_CACHE)
# One torch thread per process, here and in every process a test starts (trainings, demo, dagster runs): the two
# workers share 2 cores with simulated arms that step MuJoCo in real time, and a training on both cores stalled
# them for minutes (one sim_evaluation: 399 s beside two 2-thread torch loops, 26 s beside one 1-thread loop; the
# hardware-in-the-loop arms "not following"). README's troubleshooting gives a lab the same advice.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tatbot_pipeline.config import PipelineSettings, apply_offline_defaults  # noqa: E402
from tatbot_pipeline.synth import SynthSpec, make_recordings  # noqa: E402

apply_offline_defaults()  # what every entry point does before lerobot is imported

# Started in the background (`make test &`, nohup, some CI runners), this process ignores SIGINT. Dagster's in-process
# execution then maps SIGTERM onto that handler and never puts it back, so every process a later test starts
# inherits an ignored SIGTERM: a "SIGTERM-killed" client keeps running, and a server or simulator only stops when
# its stop() gives up and kills it (CI: a failed client test, teardowns of 10-30 s). Tests run as in a terminal.
for _sig in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.default_int_handler if _sig == signal.SIGINT else signal.SIG_DFL)


# Small but real: 4 strokes of 8 frames, both cameras at a reduced resolution to keep video encoding quick. Written
# the way the robot node records today (tatbot's fork, LeRobot v3.0, no finalize), with the operator moving a needle
# depth with the joystick in stroke 2 (synth's default).
SMALL = SynthSpec(recordings=1, episodes=4, stroke_length=8, cameras=True, image_shape=(48, 64), seed=7)
# The older eras a lab's archive also holds: LeRobot v2.1 (before 2025-09-15), and v2.1 with a 16-joint strokebatch
# (before 2025-07-24). No cameras: what they test is the format, and encoding is the slow part.
V21 = SynthSpec(episodes=3, stroke_length=8, cameras=False, seed=9, format="v2.1", scene="tatbotlogo")
V21_16 = SynthSpec(episodes=3, stroke_length=8, cameras=False, seed=10, format="v2.1", strokebatch_joints=16)


def as_never_connected(rec: Path, stash: Path) -> None:
    """Make `rec` what a failed robot connect leaves: stroke_tool writes scene.yaml, strokes.yaml, arrays/ and the
    strokebatch before it connects, so only those stay; the recorded parts are moved to `stash` (to put back later)."""
    stash.mkdir(parents=True, exist_ok=True)
    for part in [rec / "meta", rec / "data", rec / "videos", rec / "images", rec / "logs", *rec.glob("episode_*")]:
        if part.exists():
            shutil.move(part, stash / part.name)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HF_DATASETS_CACHE, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs `-n 2 --dist loadgroup`: the daemon test, which mostly waits for cron ticks, in one worker and
    the rest of the suite, still one test at a time, in the other. Tests with a group of their own keep it."""
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group("suite"))
    # Tests that yield the CPU (everything they start is niced, nothing in them is timed) go last in their worker,
    # after its rollouts on real-time simulators, and beside the other worker's: they slow nobody down there.
    items.sort(key=lambda item: item.get_closest_marker("yields_cpu") is not None)


def age_tree(path: Path, seconds: float) -> None:
    """Make a recording look untouched for `seconds` (what the settle time looks at)."""
    old = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Two pristine recordings (camera + no-camera). Never modify: copy with `recording_copy`."""
    root = tmp_path_factory.mktemp("pristine")
    make_recordings(root / "cams", SMALL)
    make_recordings(root / "nocams", SynthSpec(recordings=1, episodes=4, stroke_length=8, cameras=False, seed=8))
    return root


@pytest.fixture(scope="session")
def era_root(tmp_path_factory) -> Path:
    """Pristine recordings of the older eras (v2.1, v2.1 with a 16-joint strokebatch). Never modify."""
    root = tmp_path_factory.mktemp("eras")
    make_recordings(root / "v21", V21)
    make_recordings(root / "v21_16", V21_16)
    return root


@pytest.fixture(scope="session")
def pristine_v21(era_root: Path) -> Path:
    return next((era_root / "v21").iterdir())


@pytest.fixture(scope="session")
def pristine_v21_16(era_root: Path) -> Path:
    return next((era_root / "v21_16").iterdir())


@pytest.fixture(scope="session")
def pristine_recording(synth_root: Path) -> Path:
    return next((synth_root / "cams").iterdir())


@pytest.fixture(scope="session")
def pristine_recording_nocams(synth_root: Path) -> Path:
    return next((synth_root / "nocams").iterdir())


@pytest.fixture
def recordings_root(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    root.mkdir()
    return root


@pytest.fixture
def recording_copy(pristine_recording: Path, recordings_root: Path):
    """Factory: copy the pristine recording into this test's recordings root, optionally under another name."""

    def make(name: str | None = None, source: Path | None = None) -> Path:
        src = source or pristine_recording
        dst = recordings_root / (name or src.name)
        shutil.copytree(src, dst)
        return dst

    return make


@pytest.fixture
def settings(recordings_root: Path, tmp_path: Path) -> PipelineSettings:
    return PipelineSettings(recordings_dir=recordings_root, home=tmp_path / "home", settle_seconds=0.0)
