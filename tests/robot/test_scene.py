import shutil

import numpy as np
import pytest
import yaml

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.robot.scene import SceneError, builtin_scene, resolve_scene
from tatbot_pipeline.robot.spec import READY_POSE, SLEEP_POSE

NAMES = {"ready_pos_l_name": "left/ready", "ready_pos_r_name": "right/ready",
         "sleep_pos_l_name": "left/sleep", "sleep_pos_r_name": "right/sleep"}


def test_default_is_the_builtin_scene_with_tatbots_named_poses(tmp_path):
    scene = resolve_scene("default", tmp_path)
    assert scene.source is None and scene.name == "default"
    np.testing.assert_array_equal(scene.ready, READY_POSE)
    np.testing.assert_array_equal(scene.sleep, SLEEP_POSE)
    assert (scene.goal_time_fast, scene.goal_time_slow) == (0.2, 1.8)
    assert scene.task == "left: default stroke, right: default stroke"
    assert {k: v for k, v in builtin_scene().items() if k.endswith("_pos_l_name") or k.endswith("_pos_r_name")} == NAMES  # names, as tatbot writes them


def test_any_other_unknown_scene_is_an_error_listing_the_available_ones(tmp_path):
    (tmp_path / "tatbotlogo.yaml").write_text(yaml.safe_dump(NAMES))
    with pytest.raises(SceneError, match=r"unknown scene 'tatbotlgo'.*Available scenes: default, tatbotlogo"):
        resolve_scene("tatbotlgo", tmp_path)


def test_a_recordings_scene_yaml_is_used_as_is(tmp_path, pristine_recording):
    shutil.copy(pristine_recording / "scene.yaml", tmp_path / "flower.yaml")
    data = yaml.safe_load((tmp_path / "flower.yaml").read_text().replace("!!python/tuple", "").replace(
        "!!python/object/apply:pathlib.PosixPath", ""))
    scene = resolve_scene("flower", tmp_path)
    assert scene.source == tmp_path / "flower.yaml"
    np.testing.assert_allclose(scene.ready, READY_POSE, atol=1e-6)
    assert scene.goal_time_slow == data["arms"]["goal_time_slow"]
    assert [c["name"] for c in scene.realsenses] == ["realsense1", "realsense2"]
    assert scene.task.startswith(f"left: {data['design_name']} stroke")


@pytest.mark.parametrize("override, complaint", [
    ({"ready_pos_l": {"joints": [0, 0, 0, 0, 0, 4.0, 0]}, "ready_pos_l_name": None},
     r"scene 'bent': ready pose: outside the URDF limits left.joint_5.pos=4.0000"),
    ({"sleep_pos_r": {"joints": [0, 0]}, "sleep_pos_r_name": None}, r"sleep_pos_r.joints has 2 values"),
    ({"ready_pos_l": {"joints": [0.1] * 7}}, r"ready_pos_l_name 'left/ready' and ready_pos_l.joints disagree"),
    ({"ready_pos_r_name": None}, r"gives the ready pose of one arm only: \['ready_pos_r'\] missing"),
    ({"ready_pos_l_name": None, "ready_pos_r_name": None}, r"no ready pose: expected ready_pos_l_name"),
    ({"sleep_pos_l_name": "left/home"}, r"unknown pose name 'left/home'"),
    ({"arms": {"goal_time_fast": 0}}, r"arms.goal_time_fast: goal time 0 s must be in \(0, 30\]"),
    ({"arms": {"goal_time_slow": "slow"}}, r"arms.goal_time_slow: goal time 'slow' is not a number"),
])
def test_scene_values_are_validated_before_any_robot_is_built(tmp_path, override, complaint):
    data = {k: v for k, v in {**NAMES, **override}.items() if v is not None}
    (tmp_path / "bent.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SceneError, match=complaint):
        resolve_scene("bent", tmp_path)


@pytest.mark.parametrize("name", ["../etc/passwd", "a\x00b", "x" * 101, ""])
def test_scene_names_are_plain_and_short(tmp_path, name):
    with pytest.raises(SceneError, match="scene name") as refused:
        resolve_scene(name, tmp_path)
    assert len(str(refused.value)) < 300


def test_scenes_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TATBOT_SCENES_DIR", raising=False)
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(tmp_path))
    assert PipelineSettings.from_env().scenes_dir == tmp_path / "scenes"
    monkeypatch.setenv("TATBOT_SCENES_DIR", str(tmp_path / "elsewhere"))
    assert PipelineSettings.from_env().scenes_dir == tmp_path / "elsewhere"
