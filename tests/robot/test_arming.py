import json
import os

import pytest

from tatbot_pipeline.robot import arming
from tatbot_pipeline.robot.arming import NotArmed, arm, current, disarm, require_armed
from tatbot_pipeline.robot.state_dir import UnsafeStateDir


def test_not_armed_until_an_operator_arms_and_arming_expires(tmp_path):
    with pytest.raises(NotArmed, match="tatbot-pipeline arm --minutes 10"):
        require_armed(tmp_path)
    armed = arm(tmp_path, minutes=10, by="alice@hog", now=1000.0)
    assert require_armed(tmp_path, now=1000.0 + 599) == armed
    assert "armed by alice@hog" in armed.describe()
    with pytest.raises(NotArmed):
        require_armed(tmp_path, now=1000.0 + 600)  # expired
    with pytest.raises(NotArmed):
        require_armed(tmp_path, now=999.0)  # a clock set back does not arm


def test_disarm_and_unreadable_files_mean_not_armed(tmp_path):
    arm(tmp_path, minutes=1)
    assert current(tmp_path) is not None
    assert disarm(tmp_path) and current(tmp_path) is None and not disarm(tmp_path)
    (tmp_path / "armed.json").write_text("{not json")
    assert current(tmp_path) is None
    (tmp_path / "armed.json").write_text(json.dumps({"by": "x", "at": "soon", "until": 1e12}))
    assert current(tmp_path) is None


@pytest.mark.parametrize("minutes", [0, -5, 121, float("nan")])
def test_arming_durations_are_bounded(tmp_path, minutes):
    with pytest.raises(ValueError, match="at most 120 minutes"):
        arm(tmp_path, minutes=minutes)


@pytest.mark.parametrize("how", ["foreign file", "world-writable file", "world-writable dir", "foreign dir"])
def test_arming_others_could_have_written_is_refused(tmp_path, how):
    state = tmp_path / "state"
    arm(state, minutes=10, by="alice@hog")
    target = state / "armed.json" if "file" in how else state
    if "world-writable" in how:
        target.chmod(0o666 if target.is_file() else 0o777)
    else:
        os.chown(target, 4242, 4242)  # as another local user would have made it
    with pytest.raises(UnsafeStateDir, match="anyone who can write there could arm the robot"):
        require_armed(state)


def test_a_reboot_ends_arming(tmp_path, monkeypatch):
    arm(tmp_path, minutes=10, by="alice@hog")
    assert current(tmp_path) is not None
    boot = tmp_path / "boot_id"
    boot.write_text("another-boot\n")  # what the kernel reports after a reboot
    monkeypatch.setattr(arming, "BOOT_ID", boot)
    assert current(tmp_path) is None
