"""The synthetic recordings must be real: LeRobot loads them and the tatbot side files are consistent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from safetensors.numpy import load_file

from tatbot_pipeline.recordings.naming import parse_recording_name
from tatbot_pipeline.recordings.scene import load_scene, scrub, secret_values
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER
from tatbot_pipeline.synth import SynthSpec, make_recordings

from .conftest import SMALL


def test_lerobot_loads_recording_offline(pristine_recording: Path):
    ds = LeRobotDataset(f"tatbot/{pristine_recording.name}", root=pristine_recording, video_backend="pyav")
    assert ds.meta.info["codebase_version"] == "v3.0"
    assert ds.fps == 10
    assert ds.num_episodes == SMALL.episodes
    assert ds.num_frames == SMALL.episodes * SMALL.stroke_length
    assert ds.meta.features["action"]["names"] == JOINT_NAMES
    assert ds.meta.features["observation.state"]["shape"] == (14,)
    frame = ds[SMALL.stroke_length + 3]  # episode 1, frame 3
    assert int(frame["episode_index"]) == 1 and int(frame["frame_index"]) == 3
    assert frame["observation.images.realsense1"].shape == (3, *SMALL.image_shape)
    assert frame["task"].startswith("left: ") and ", right: " in frame["task"]


def test_actions_follow_strokebatch_at_middle_offset_and_state_lags(pristine_recording: Path):
    ds = LeRobotDataset("tatbot/x", root=pristine_recording, video_backend="pyav")
    joints = load_file(str(pristine_recording / "strokebatch.safetensors"))["joints"]
    b, l, o, n = joints.shape
    assert (b, l, n) == (SMALL.episodes, SMALL.stroke_length, 14) and o == SMALL.offset_num
    actions = np.stack(ds.hf_dataset["action"]).reshape(b, l, 14)
    states = np.stack(ds.hf_dataset["observation.state"]).reshape(b, l, 14)
    np.testing.assert_allclose(actions, joints[:, :, o // 2], atol=1e-6)
    assert (actions >= JOINT_LOWER - 1e-6).all() and (actions <= JOINT_UPPER + 1e-6).all()
    # the arm lags the command: state at t+1 lies between state at t and action at t
    lag = np.abs(states[:, 1:] - actions[:, :-1]) <= np.abs(states[:, :-1] - actions[:, :-1]) + 1e-6
    assert lag.all()
    assert not np.allclose(states, actions)


def test_side_files_and_name(pristine_recording: Path):
    name = parse_recording_name(pristine_recording.name)
    assert name is not None and str(name) == pristine_recording.name
    for ep in range(SMALL.episodes):
        assert (pristine_recording / "logs" / f"episode_{ep:06d}.txt").stat().st_size > 0
        assert (pristine_recording / f"episode_{ep:06d}" / "stroke_l.png").exists()
        assert (pristine_recording / f"episode_{ep:06d}" / "stroke_r.png").exists()
    assert len(list((pristine_recording / "arrays").glob("*.npy"))) == 2 * SMALL.episodes
    text = (pristine_recording / "scene.yaml").read_text()
    assert "!!python/object/apply:pathlib.PosixPath" in text and "!!python/tuple" in text


def test_scene_loader_is_safe_and_scrubs_secrets(pristine_recording: Path):
    scene = load_scene(pristine_recording / "scene.yaml")
    assert scene["stroke_length"] == SMALL.stroke_length
    assert scene["arms"]["offset_num"] == SMALL.offset_num
    assert scene["design_dir"].startswith("/nfs/tatbot/designs/")  # PosixPath tag -> plain string
    assert scene["arms"]["offset_range"] == [-0.002, 0.002]  # tuple tag -> list
    secrets = secret_values(scene)
    assert "tatbot-cam-pw-1" in secrets
    scrubbed = repr(scrub(scene))
    assert not any(s in scrubbed for s in secrets)


def test_scene_loader_refuses_arbitrary_objects(tmp_path: Path):
    evil = tmp_path / "scene.yaml"
    evil.write_text("x: !!python/object/apply:os.system ['touch pwned']\n")
    scene = load_scene(evil)  # tag mapped to plain data; nothing executed
    assert scene == {"x": ["touch pwned"]}
    assert not (tmp_path / "pwned").exists()


def test_deterministic_for_a_seed(tmp_path: Path):
    spec = SynthSpec(episodes=2, stroke_length=4, seed=3)
    a = make_recordings(tmp_path / "a", spec)[0]
    b = make_recordings(tmp_path / "b", spec)[0]
    assert a.name == b.name
    for rel in ("data/chunk-000/file-000.parquet", "strokebatch.safetensors", "scene.yaml", "strokes.yaml"):
        if rel.endswith(".parquet"):
            import pandas as pd

            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_cli_synth_refuses_non_empty_recording_dir(tmp_path: Path):
    cmd = [sys.executable, "-m", "tatbot_pipeline.cli", "synth", str(tmp_path), "--episodes", "2", "--stroke-length", "4"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in tmp_path.rglob("*"))
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 2
    assert "not empty" in second.stderr and "Traceback" not in second.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_package_imports_without_pyrealsense2():
    code = "import sys; sys.modules['pyrealsense2'] = None; import tatbot_pipeline.definitions; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
