"""Synthetic recordings must be what tatbot's recorder writes: LeRobot loads them, and the tatbot side is real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from safetensors.numpy import load_file

from tatbot_pipeline.recordings.naming import parse_recording_name
from tatbot_pipeline.scene_yaml import load_scene, scrub, secret_values
from tatbot_pipeline.recordings.strokebatch import LEGACY_TO_ROBOT
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, READY_POSE, SLEEP_POSE, scene_pose
from tatbot_pipeline.robot.plant import ArmPlant, replay_arms
from tatbot_pipeline.synth import SynthSpec, make_recordings, resume_recording

from .conftest import SMALL, V21, V21_16

DATA = "data/chunk-000/file-000.parquet"


def strokes_yaml(rec: Path) -> list:
    return yaml.safe_load((rec / "strokes.yaml").read_text())["strokes"]  # tatbot itself reads it with safe_load


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
    assert frame["task"].startswith("left: left arm ") and ", right: right arm " in frame["task"]


def test_default_is_the_fork_v30_layout(pristine_recording: Path):
    """The fork rewrites everything with pandas after each episode: list<double> columns, no quantile stats."""
    assert SynthSpec().cameras and SynthSpec().format == "v3.0"  # what stroke_tool does by default
    info = json.loads((pristine_recording / "meta/info.json").read_text())
    assert info["video_files_size_in_mb"] == 500 and info["robot_type"] == "tatbot"
    schema = pq.read_schema(pristine_recording / DATA)
    assert str(schema.field("action").type) == "list<element: double>" and str(schema.field("timestamp").type) == "double"
    assert b"pandas" in schema.metadata
    stats = json.loads((pristine_recording / "meta/stats.json").read_text())
    assert set(stats["action"]) == {"min", "max", "mean", "std", "count"}
    episodes = pq.read_schema(pristine_recording / "meta/episodes/chunk-000/file-000.parquet")
    assert not [n for n in episodes.names if n.endswith("/q01")]
    scratch = pristine_recording / "images"  # the image writer's scratch dir, emptied but left behind
    assert sorted(p.name for p in scratch.iterdir()) == ["observation.images.realsense1", "observation.images.realsense2"]
    assert not any(scratch.rglob("*.png"))


def offsets_of(actions: np.ndarray, joints: np.ndarray, ep: int) -> np.ndarray:
    """Per frame and arm, the strokebatch offset the action came from."""
    left = np.abs(joints[ep, :, :, :7] - actions[:, None, :7]).max(axis=2).argmin(axis=1)
    right = np.abs(joints[ep, :, :, 7:] - actions[:, None, 7:]).max(axis=2).argmin(axis=1)
    return np.stack([left, right], axis=1)


def test_actions_follow_joystick_offset_paths_and_state_lags(pristine_recording: Path):
    joints = load_file(str(pristine_recording / "strokebatch.safetensors"))["joints"]
    b, length, o, n = joints.shape
    assert (b, length, n) == (SMALL.episodes, SMALL.stroke_length, 14) and o == SMALL.offset_num
    table = pd.read_parquet(pristine_recording / DATA)
    actions = np.stack(table["action"]).reshape(b, length, 14).astype(np.float32)
    states = np.stack(table["observation.state"]).reshape(b, length, 14)
    strokes = strokes_yaml(pristine_recording)
    paths = [offsets_of(actions[ep], joints, ep) for ep in range(b)]
    for ep in range(b):
        expected = np.stack([joints[ep, np.arange(length), paths[ep][:, a]] for a in range(2)])
        np.testing.assert_allclose(actions[ep, :, :7], expected[0, :, :7], atol=1e-6)
        np.testing.assert_allclose(actions[ep, :, 7:], expected[1, :, 7:], atol=1e-6)
        assert np.abs(np.diff(paths[ep], axis=0)).max() <= 1  # the joystick moves one step per pose
    assert (paths[0][0] == o // 2).all()  # every index starts mid-range
    moved = {ep for ep in range(b) if np.ptp(paths[ep], axis=0).max() > 0}
    assert moved == {2}  # SMALL: the operator touched the joystick in stroke 2 only
    for arm in range(2):  # an arm's drawn strokes continue from where its previous drawn stroke ended
        drawn = [ep for ep in range(b) if not strokes[ep][arm]["is_inkdip"]]
        for before, after in zip(drawn, drawn[1:]):
            assert paths[after][0, arm] == paths[before][-1, arm]
    assert (actions >= JOINT_LOWER - 1e-6).all() and (actions <= JOINT_UPPER + 1e-6).all()
    # The observed joints are what the simulated arm's plant (trossen-arm-sim's servos) does when sent these actions
    # from rest at ready, read before each command: behind the actions, not on them.
    plant = ArmPlant()
    for ep in range(b):
        np.testing.assert_allclose(states[ep], replay_arms(plant, READY_POSE, actions[ep], 10, 0.2), atol=1e-5)
    assert np.abs(states - actions).max() > 0.01


def test_strokes_arrays_pngs_and_name_as_stroke_tool_writes_them(pristine_recording: Path):
    name = parse_recording_name(pristine_recording.name)
    assert name is not None and name.scene == "default"  # scene.name, not the design
    strokes = strokes_yaml(pristine_recording)
    arrays = sorted(p.relative_to(pristine_recording).as_posix() for p in (pristine_recording / "arrays").iterdir())
    referenced = sorted(v for pair in strokes for s in pair for k, v in s.items() if k.endswith("_file"))
    assert arrays == referenced and all(re.fullmatch(r"arrays/stroke_\d+_(left|right)_\w+\.npy", a) for a in arrays)
    assert list(strokes[0][0])[:8] == ["description", "arm", "gcode_text", "frame_path", "is_rest", "is_inkdip", "inkcap", "color"]
    assert strokes[0][0]["is_inkdip"] and strokes[0][1]["is_rest"]  # gcode.py: left dips first, right waits
    for ep, pair in enumerate(strokes):
        for side, stroke in zip("lr", pair):
            png = pristine_recording / f"episode_{ep:06d}" / f"stroke_{side}.png"
            assert png.exists() == (stroke["frame_path"] is not None), (ep, side)
        log = pristine_recording / "logs" / f"episode_{ep:06d}.txt"
        assert log.exists() and log.read_text() == ""  # clean strokes: the root logger saw nothing


def test_scene_yaml_is_what_scene_to_yaml_writes(pristine_recording: Path):
    text = (pristine_recording / "scene.yaml").read_text()
    top = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ") and not line.startswith("-")]
    assert top == sorted(top)  # plain yaml.dump sorts keys
    assert re.search(r"^design_dir: /srv/tatbot-data/designs/\w+$", text, re.M)  # top-level Path: a plain string
    assert "arm_l_config_filepath: !!python/object/apply:pathlib.PosixPath" in text  # nested Paths keep their tag
    assert "offset_range: !!python/tuple" in text
    scene = load_scene(pristine_recording / "scene.yaml")
    assert scene["ready_pos_l_name"] == "left/ready" and scene["sleep_pos_r_name"] == "right/sleep"
    assert not any(k in scene for k in ("ready_pos_l", "sleep_pos_l", "ready_pos_full"))  # values are never dumped
    np.testing.assert_allclose(scene_pose(scene, "ready"), READY_POSE)
    np.testing.assert_allclose(scene_pose(scene, "sleep"), SLEEP_POSE)


def test_scene_loader_is_safe_and_scrubs_secrets(pristine_recording: Path):
    scene = load_scene(pristine_recording / "scene.yaml")
    assert scene["stroke_length"] == SMALL.stroke_length
    assert scene["arms"]["offset_num"] == SMALL.offset_num
    assert scene["arms"]["arm_l_config_filepath"] == "/home/tatbot/tatbot/config/trossen/arm_l.yaml"  # tag -> str
    assert scene["arms"]["offset_range"] == [-0.002, 0.002]  # tuple tag -> list
    secrets = secret_values(scene)
    assert {"tatbot-cam-pw-1", "192.168.1.91", scene["cams"]["realsenses"][0]["serial_number"]} <= secrets
    scrubbed = repr(scrub(scene))
    assert not any(s in scrubbed for s in secrets)


def test_scene_loader_refuses_arbitrary_objects(tmp_path: Path):
    evil = tmp_path / "scene.yaml"
    evil.write_text("x: !!python/object/apply:os.system ['touch pwned']\n")
    scene = load_scene(evil)  # tag mapped to plain data; nothing executed
    assert scene == {"x": ["touch pwned"]}
    assert not (tmp_path / "pwned").exists()


def test_session_is_complete_after_every_episode_and_resumes(tmp_path: Path):
    """The fork has no finalize(): a stopped session is a complete dataset, and resume appends to the same files."""
    spec = SynthSpec(episodes=4, stroke_length=4, cameras=False, seed=5, saved_episodes=2)
    [rec] = make_recordings(tmp_path, spec)
    stopped = LeRobotDataset("tatbot/x", root=rec)
    assert stopped.num_episodes == 2 and len(strokes_yaml(rec)) == 4
    before = pd.read_parquet(rec / DATA)
    resume_recording(rec, spec, design=load_scene(rec / "scene.yaml")["design_name"], seed=5000)  # make_recordings: seed*1000
    resumed = LeRobotDataset("tatbot/y", root=rec)
    assert resumed.num_episodes == 4 and resumed.num_frames == 16
    assert sorted(p.name for p in (rec / "data/chunk-000").iterdir()) == ["file-000.parquet"]  # rewritten, not file-001
    after = pd.read_parquet(rec / DATA)
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    assert sorted(p.name for p in (rec / "logs").iterdir()) == [f"episode_{i:06d}.txt" for i in range(4)]


def test_v21_era_layout(pristine_v21: Path):
    info = json.loads((pristine_v21 / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["total_episodes"] == V21.episodes
    assert pristine_v21.name.startswith("stroke-tatbotlogo-2025y-08m-")  # recorded before 2025-09-15
    assert not (pristine_v21 / "meta/episodes").exists()
    assert sorted(p.name for p in (pristine_v21 / "data/chunk-000").iterdir()) == [f"episode_{i:06d}.parquet" for i in range(3)]
    episodes = [json.loads(line) for line in (pristine_v21 / "meta/episodes.jsonl").read_text().splitlines()]
    assert [e["episode_index"] for e in episodes] == [0, 1, 2]
    strokes = strokes_yaml(pristine_v21)
    assert [e["condition"] for e in episodes] == [{"stroke_l": pair[0], "stroke_r": pair[1]} for pair in strokes]
    assert (pristine_v21 / "meta/episodes_stats.jsonl").exists() and (pristine_v21 / "meta/tasks.jsonl").exists()


def test_16_joint_strokebatch_era(pristine_v21_16: Path):
    """Before 2025-07-24: 8 URDF joints per arm (the mimic carriage joint included) and a dt tensor."""
    batch = load_file(str(pristine_v21_16 / "strokebatch.safetensors"))
    b, length, o, n = batch["joints"].shape
    assert n == 16 and batch["dt"].shape == (b, length, o)
    assert (batch["joints"][..., [7, 15]] == 0).all()
    assert parse_recording_name(pristine_v21_16.name).recorded_at.strftime("%Y-%m-%d") < "2025-07-24"
    frames = pd.concat([pd.read_parquet(p) for p in sorted((pristine_v21_16 / "data/chunk-000").iterdir())])
    actions = np.stack(frames["action"]).reshape(b, length, 14)
    mapped = batch["joints"][..., LEGACY_TO_ROBOT]
    for ep in range(b):
        path = offsets_of(actions[ep], mapped, ep)
        np.testing.assert_allclose(actions[ep, :, :7], mapped[ep, np.arange(length), path[:, 0], :7], atol=1e-6)
        np.testing.assert_allclose(actions[ep, :, 7:], mapped[ep, np.arange(length), path[:, 1], 7:], atol=1e-6)
    assert V21_16.strokebatch_joints == 16


def test_deterministic_for_a_seed(tmp_path: Path):
    spec = SynthSpec(episodes=2, stroke_length=4, seed=3, cameras=False)
    a = make_recordings(tmp_path / "a", spec)[0]
    b = make_recordings(tmp_path / "b", spec)[0]
    assert a.name == b.name
    for rel in (DATA, "strokebatch.safetensors", "scene.yaml", "strokes.yaml"):
        if rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_cli_synth_eras_and_refusal(tmp_path: Path):
    cmd = [sys.executable, "-m", "tatbot_pipeline.cli", "synth", str(tmp_path), "--episodes", "2", "--stroke-length", "4",
           "--no-cameras", "--format", "v2.1", "--strokebatch-joints", "16"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    [rec] = [Path(line) for line in first.stdout.splitlines()]
    assert json.loads((rec / "meta/info.json").read_text())["codebase_version"] == "v2.1"
    assert load_file(str(rec / "strokebatch.safetensors"))["joints"].shape[-1] == 16
    before = sorted(p.name for p in tmp_path.rglob("*"))
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 2
    assert "not empty" in second.stderr and "Traceback" not in second.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_package_imports_without_pyrealsense2():
    code = "import sys; sys.modules['pyrealsense2'] = None; import tatbot_pipeline.definitions; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
