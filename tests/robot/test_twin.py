"""Every hardware rollout paired with its simulation, on a stand-in hog: two simulated controllers whose arm has hidden
servo gains and a command delay play the real arms (tests/evaluation/test_calibration.py: HIDDEN). A real `vla_infer`
rollout on the `tatbot` backend records its eval dataset there; its actions, replayed on the simulated arms, land
closer to what the stand-in did on the right twin than on trossen-arm-sim's own gains, and the next calibration fits
on the rollout too."""

from __future__ import annotations


import json
import os
import shutil
from pathlib import Path

from tatbot_pipeline.evaluation.calibration import TWIN_FILE, calibrate, is_hardware_rollout, pair_with_sim
from tatbot_pipeline.robot import plant
from tatbot_pipeline.robot.sim_controllers import ARMSIM_MODULE
from tests.evaluation.test_calibration import HIDDEN
from tests.robot.conftest import write_scene
from tests.robot.test_tatbot_hil import node, rollout  # noqa: F401  (the armed robot node fixture)


def test_a_rollout_on_the_stand_in_hog_is_paired_with_its_twin_and_feeds_the_next_calibration(
        extra_sims, node, act_checkpoint, pristine_recording_nocams, tmp_path):  # noqa: F811
    hidden = plant.write_scene(tmp_path / "hidden", HIDDEN)
    left = extra_sims("127.0.0.7", scene=hidden, module=ARMSIM_MODULE)
    right = extra_sims("127.0.0.8", scene=hidden, module=ARMSIM_MODULE)
    write_scene(Path(os.environ["TATBOT_SCENES_DIR"]), "standin", left.host, right.host)
    out = rollout(node, act_checkpoint, "standin", 20, record_eval=True)
    assert out.success and out.eval_dir, out.message
    eval_dir = Path(out.eval_dir)
    assert is_hardware_rollout(eval_dir)

    untuned = pair_with_sim(eval_dir, tmp_path / "pair-packaged")
    twin = pair_with_sim(eval_dir, tmp_path / "pair-twin", plant_scene=hidden)
    assert twin["steps"] == untuned["steps"] == out.num_steps and twin["stopped"] is None
    # On its true twin the rollout's replay lands closer to what the stand-in did than on the packaged gains.
    assert twin["tip_p95_mm"] < untuned["tip_p95_mm"], (twin, untuned)
    assert json.loads((eval_dir / TWIN_FILE).read_text()) == twin  # the last pairing is kept with the dataset

    split = tmp_path / "splits" / "v1"
    for side in ("train", "val"):
        shutil.copytree(pristine_recording_nocams, split / side)
    calibration = calibrate(split, tmp_path / "calibration", confirm=False, rollouts=[eval_dir])
    assert calibration.train_strokes == 4 + 1 and calibration.rollouts == [str(eval_dir)]
