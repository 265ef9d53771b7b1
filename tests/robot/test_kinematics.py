"""Needle-tip forward kinematics against a hand computation from the arm model's link offsets (wxai_follower.xml)."""

import numpy as np
import pytest

from tatbot_pipeline.robot.kinematics import ee_offsets_mm, needle_tip_mm, tip_deviation_mm

# At zero joints every link offset points along x or z: base -> link_1 z 57.25, -> link_2 (20, 46.25), -> link_3 x
# -264, -> link_4 (245, 60), -> link_5 (67.75, 45.5), -> link_6 (28.95, -45.5), -> ee_site x 156 (mm).
ZERO_TIP = np.array([20 - 264 + 245 + 67.75 + 28.95 + 156, 0.0, 57.25 + 46.25 + 60 + 45.5 - 45.5])


def test_the_tip_at_zero_joints_is_the_sum_of_the_link_offsets():
    np.testing.assert_allclose(needle_tip_mm(np.zeros(7)), ZERO_TIP, atol=1e-6)


@pytest.mark.parametrize("angle", [0.3, -1.2, 2.5])
def test_joint_0_rotates_the_tip_about_z_by_its_angle(angle):
    q = np.zeros(7)
    q[0] = angle
    r = ZERO_TIP[0]
    np.testing.assert_allclose(needle_tip_mm(q), [r * np.cos(angle), r * np.sin(angle), ZERO_TIP[2]], atol=1e-6)


def test_joint_1_swings_the_forearm_about_the_shoulder_and_joint_5_and_the_gripper_do_not_move_the_tip():
    q = np.zeros(7)
    q[1] = np.pi / 2  # about +y at the shoulder (20, 0, 103.5): (x, z) relative (233.7, 60) -> (60, -233.7)
    np.testing.assert_allclose(needle_tip_mm(q), [20 + 60, 0, 103.5 - 233.7], atol=1e-6)
    q = np.zeros(7)
    q[5], q[6] = 1.0, 0.04  # the wrist roll turns about the axis the tip lies on; the gripper slides beside it
    np.testing.assert_allclose(needle_tip_mm(q), ZERO_TIP, atol=1e-6)


def test_a_scene_offset_shifts_both_paths_and_cancels_in_the_deviation():
    scene = {"arms": {"ee_offset_l": {"xyz": [-0.0032, -0.0061, 0.0]}, "ee_offset_r": {"xyz": [0.0004, 0.0118, 0.0053]}}}
    offsets = ee_offsets_mm(scene)
    np.testing.assert_allclose(offsets["left"], [-3.2, -6.1, 0.0])
    np.testing.assert_allclose(needle_tip_mm(np.zeros(7), offsets["right"]), ZERO_TIP - [0.4, 11.8, 5.3], atol=1e-6)
    assert {k: v.tolist() for k, v in ee_offsets_mm({"arms": {}}).items()} == {"left": [0, 0, 0], "right": [0, 0, 0]}

    recorded = np.zeros((3, 7))
    simulated = recorded.copy()
    simulated[:, 0] = [0.0, 0.1, 0.2]  # j0 off by a: the tip is a chord 2 r sin(a/2) away
    expected = 2 * ZERO_TIP[0] * np.sin(simulated[:, 0] / 2)
    np.testing.assert_allclose(tip_deviation_mm(recorded, simulated), expected, atol=1e-6)
    np.testing.assert_allclose(tip_deviation_mm(recorded, simulated, offsets["left"]), expected, atol=1e-6)


def test_bad_offsets_and_mismatched_paths_are_refused():
    with pytest.raises(ValueError, match=r"arms.ee_offset_r: expected xyz of 3 finite numbers in m"):
        ee_offsets_mm({"arms": {"ee_offset_r": {"xyz": [0.0, 0.1]}}})
    with pytest.raises(ValueError, match=r"recorded \(2, 7\) and simulated \(3, 7\) joint paths differ"):
        tip_deviation_mm(np.zeros((2, 7)), np.zeros((3, 7)))
