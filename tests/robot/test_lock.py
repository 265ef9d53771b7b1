import subprocess
import sys
import time

import pytest

from tatbot_pipeline.robot.lock import RobotBusy, RobotLock

HOLD = """
import sys, time
from pathlib import Path
from tatbot_pipeline.robot.lock import RobotLock
lock = RobotLock(Path(sys.argv[1]), "tatbot", owner="holder-process")
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_in_the_same_process_is_refused(tmp_path):
    with RobotLock(tmp_path, "sim", owner="first rollout"):
        with pytest.raises(RobotBusy, match=r"already running on the sim robot \(pid \d+ on .*first rollout"):
            RobotLock(tmp_path, "sim").acquire()
        RobotLock(tmp_path, "tatbot").acquire()  # another robot is another lock
    with RobotLock(tmp_path, "sim"):  # released
        pass


def test_another_process_holds_it_and_a_killed_holder_never_blocks(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RobotBusy, match=f"pid {proc.pid} .*holder-process"):
            RobotLock(tmp_path, "tatbot").acquire()
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
