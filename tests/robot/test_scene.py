import shutil

import numpy as np
import pytest
import yaml

from tatbot_pipeline.robot.scene import resolve_scene, scenes_dir
from tatbot_pipeline.robot.spec import READY_POSE, SLEEP_POSE


def test_unknown_scene_falls_back_to_the_builtin_one(tmp_path):
    scene = resolve_scene("tatbotlogo", tmp_path)
    assert scene.source is None and scene.name == "tatbotlogo"
    np.testing.assert_array_equal(scene.ready, READY_POSE)
    np.testing.assert_array_equal(scene.sleep, SLEEP_POSE)
    assert (scene.goal_time_fast, scene.goal_time_slow) == (0.2, 1.8)
    assert scene.task == "left: tatbotlogo stroke, right: tatbotlogo stroke"


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


def test_poses_outside_the_limits_and_bad_names_are_refused(tmp_path):
    (tmp_path / "bent.yaml").write_text(yaml.safe_dump({"ready_pos_l": {"joints": [0, 0, 0, 0, 0, 4.0, 0]}}))
    with pytest.raises(ValueError, match="bent.yaml: ready pose .* outside the URDF joint limits"):
        resolve_scene("bent", tmp_path)
    (tmp_path / "short.yaml").write_text(yaml.safe_dump({"sleep_pos_r": {"joints": [0, 0]}}))
    with pytest.raises(ValueError, match="sleep_pos_r.joints has 2 values"):
        resolve_scene("short", tmp_path)
    with pytest.raises(ValueError, match="scene name '../etc/passwd'"):
        resolve_scene("../etc/passwd", tmp_path)


def test_scenes_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TATBOT_SCENES_DIR", raising=False)
    assert scenes_dir(tmp_path) == tmp_path / "scenes"
    monkeypatch.setenv("TATBOT_SCENES_DIR", str(tmp_path / "elsewhere"))
    assert scenes_dir(tmp_path) == tmp_path / "elsewhere"
