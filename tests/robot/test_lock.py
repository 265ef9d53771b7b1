import os
import re
import stat
import subprocess
import sys
import time

from pathlib import Path

import pytest

from tatbot_pipeline.robot.lock import RobotBusy, RobotLock
from tatbot_pipeline.config import default_state_dir
from tatbot_pipeline.robot.state_dir import UnsafeStateDir

HOLD = """
import sys, time
from pathlib import Path
from tatbot_pipeline.robot.lock import RobotLock
lock = RobotLock(Path(sys.argv[1]), "tatbot", owner="holder-process")
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_in_the_same_process_is_refused(tmp_path, caplog):
    with RobotLock(tmp_path, "sim", owner="first rollout"):
        with pytest.raises(RobotBusy, match=r"already running on the sim robot \(since [-\d]+ [:\d]+\) — wait") as e:
            RobotLock(tmp_path, "sim").acquire()
        assert "pid" not in str(e.value) and "first rollout" not in str(e.value)  # a remote caller may read it
        assert re.search(r"held by pid \d+ on .*first rollout", caplog.text)  # the node's log says who
        RobotLock(tmp_path, "tatbot").acquire()  # another robot is another lock
    with RobotLock(tmp_path, "sim"):  # released
        pass


def test_another_process_holds_it_and_a_killed_holder_never_blocks(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RobotBusy, match="already running on the tatbot robot"):
            RobotLock(tmp_path, "tatbot").acquire()
        assert f"pid {proc.pid} " in caplog.text and "holder-process" in caplog.text
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the lock with the process
        try:
            RobotLock(tmp_path, "tatbot").acquire()
            break
        except RobotBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_lock_files_are_the_robot_users_alone(tmp_path):
    with RobotLock(tmp_path / "state", "sim") as lock:
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700  # created private


@pytest.mark.parametrize("how", ["world-writable dir", "foreign dir", "foreign lock file", "world-writable lock file"])
def test_a_state_dir_others_control_is_refused(tmp_path, how):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    lock_file = state / "robot-sim.lock"
    lock_file.touch(mode=0o600)
    target = lock_file if "file" in how else state
    if "world-writable" in how:
        target.chmod(0o777 if target.is_dir() else 0o666)
    else:
        os.chown(target, 4242, 4242)  # as another user made it (the tests run as root, so they can)
    with pytest.raises(UnsafeStateDir, match="could arm the robot or hold its lock, so nothing moves"):
        RobotLock(state, "sim").acquire()


def test_the_default_state_dir_is_under_the_users_own_home():
    import pwd

    home = pwd.getpwuid(os.geteuid()).pw_dir
    assert default_state_dir() == Path(home) / ".local" / "state" / "tatbot-robot"
    assert not str(default_state_dir()).startswith("/tmp")
