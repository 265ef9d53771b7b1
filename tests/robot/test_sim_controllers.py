"""The package's launcher of simulated arm controllers: free addresses, readiness, teardown whatever happens."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from tatbot_pipeline.robot.sim_controllers import (
    TCP_PORT, SimControllerError, address_free, free_loopback_hosts, port_open, sim_controllers,
)
from tests.robot.conftest import read_back


def test_a_pair_serves_the_driver_on_two_free_addresses_and_is_gone_afterwards(tmp_path):
    with sim_controllers(tmp_path) as sims:
        hosts = [sims["left"].host, sims["right"].host]
        assert len(set(hosts)) == 2 and all(h.startswith("127.") for h in hosts)
        assert all(port_open(h, TCP_PORT) for h in hosts)
        joints = read_back(hosts[0])  # the unmodified trossen_arm driver talks to it
        assert joints.shape == (7,) and np.isfinite(joints).all()
        procs = [s.proc for s in sims.values()]
    assert all(p.poll() is not None for p in procs)  # reaped: no process left behind
    assert not any(port_open(h, TCP_PORT) for h in hosts)
    assert all(address_free(h) for h in hosts)


def test_the_pair_is_stopped_when_the_body_raises(tmp_path):
    with pytest.raises(KeyError, match="boom"):
        with sim_controllers(tmp_path) as sims:
            procs = [s.proc for s in sims.values()]
            raise KeyError("boom")
    assert all(p.poll() is not None for p in procs)


def test_a_taken_address_is_skipped(tmp_path):
    first = free_loopback_hosts(1)[0]
    with socket.socket() as squatter:
        squatter.bind((first, TCP_PORT))
        squatter.listen(1)
        assert not address_free(first)
        assert first not in free_loopback_hosts(2)


def test_a_controller_that_cannot_start_is_an_error_with_its_log_and_nothing_stays(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body name='no_arm'/></worldbody></mujoco>")
    with pytest.raises(SimControllerError, match=r"(?s)simulated controller on 127\.\S+ exited .*joint_0. not found in scene"):
        with sim_controllers(tmp_path, scenes={"right": broken}):
            pass
    # The left one, started before, was stopped too: its log says it came up, and its address is free again.
    logs = sorted(tmp_path.glob("armsim-*.log"))
    assert logs and any("armsim ready" in p.read_text() for p in logs)
    assert all(address_free(p.stem.removeprefix("armsim-")) for p in logs)


def test_a_killed_launcher_leaves_no_simulator_behind(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (f"from tatbot_pipeline.robot.sim_controllers import sim_controllers\n"
              f"import time\n"
              f"with sim_controllers({str(tmp_path)!r}) as sims:\n"
              f"    print(*[s.proc.pid for s in sims.values()], flush=True)\n"
              f"    time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in launcher.stdout.readline().split()]  # printed once both controllers serve
        assert len(pids) == 2 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
        launcher.send_signal(signal.SIGKILL)  # no finally, no context manager exit: only the children's own guard
        launcher.wait()

        def alive(pid: int) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False

        deadline = time.monotonic() + 30  # a failure bound, not a measurement: they go as soon as SIGTERM lands
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in pids)
    finally:
        launcher.kill()
