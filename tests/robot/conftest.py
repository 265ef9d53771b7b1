"""Arm controllers for the tatbot backend's tests: the package's simulated controllers on loopback addresses.

The launcher is the one the sim evaluation uses (tatbot_pipeline/robot/sim_controllers.py). The pair the README's
hardware-in-the-loop demo uses (127.0.0.2 left, 127.0.0.3 right, unmodified trossen-arm-sim) runs once per test
module; tests that kill a simulator or need another scene start their own on 127.0.0.4 and up. The checkpoints come
from tests/inference.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tatbot_pipeline.robot.sim_controllers import PLAIN_MODULE, ArmSim
from tests.inference.conftest import act_checkpoint, checkpoint_home  # noqa: F401  (shared session fixtures)

LEFT, RIGHT = "127.0.0.2", "127.0.0.3"
WS_PORTS = {LEFT: 50102, RIGHT: 50103}


def _require_loopback_aliases() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("simulated arms need the loopback aliases 127.0.0.2/3, which only Linux has without setup")
    for host in (LEFT, RIGHT):
        with socket.socket() as s:
            s.bind((host, 0))  # raises if the address is not loopback here


@pytest.fixture(scope="module")
def arm_sims(tmp_path_factory) -> dict[str, ArmSim]:
    """The demo pair, unmodified trossen-arm-sim: left 127.0.0.2, right 127.0.0.3 (idle, each still steps MuJoCo at
    500 Hz: they run for one test module, not the whole session)."""
    _require_loopback_aliases()
    logs = tmp_path_factory.mktemp("armsim")
    sims = {side: ArmSim(host, WS_PORTS[host], module=PLAIN_MODULE, log_dir=logs) for side, host in (("left", LEFT), ("right", RIGHT))}
    try:
        for sim in sims.values():
            sim.start()
        yield sims
    finally:
        for sim in sims.values():
            sim.stop()


@pytest.fixture
def hil(arm_sims: dict[str, ArmSim]) -> dict[str, ArmSim]:
    """The demo pair, both running: a test that killed one gets it back for the next."""
    for sim in arm_sims.values():
        if not sim.alive:
            sim.start()
    return arm_sims


@pytest.fixture
def extra_sims(tmp_path):
    """Start more simulators (other addresses, scenes, harness); all stopped after the test."""
    started: list[ArmSim] = []

    def start(host: str, **kw) -> ArmSim:
        kw.setdefault("module", PLAIN_MODULE)
        started.append(ArmSim(host, 50100 + int(host.rsplit(".", 1)[1]), log_dir=tmp_path, **kw).start())
        return started[-1]

    yield start
    for sim in started:
        sim.stop()


def write_scene(directory: Path, name: str, left: str, right: str, **arms) -> Path:
    """A scene.yaml as tatbot writes one (pose names, not values), pointing the arms at simulators.

    Its RealSense cameras match the test checkpoints' images (48×64); with TATBOT_CAMERA_SOURCE=sim they are rendered.
    """
    scene = {
        "name": name,
        "design_name": "hil",
        "stroke_length": 8,
        "arms": {"ip_address_l": left, "ip_address_r": right, "goal_time_fast": 0.2, "goal_time_slow": 1.0,
                 "connection_timeout": 1.0, **arms},
        "cams": {"realsenses": [{"name": f"realsense{i}", "width": 64, "height": 48, "fps": 30,
                                 "serial_number": f"00000000000{i}"} for i in (1, 2)]},
        "ready_pos_l_name": "left/ready", "ready_pos_r_name": "right/ready",
        "sleep_pos_l_name": "left/sleep", "sleep_pos_r_name": "right/sleep",
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(scene, sort_keys=False))
    return path


def read_back(host: str) -> np.ndarray:
    """An arm's 7 joint positions, read through trossen_arm by a fresh driver (configures, reads, lets go)."""
    import trossen_arm as ta

    driver = ta.TrossenArmDriver()
    driver.configure(ta.Model.wxai_v0, ta.StandardEndEffector.wxai_v0_base, host, False, timeout=5.0)
    try:
        return np.asarray(list(driver.get_all_positions())[:7])
    finally:
        driver.cleanup()


def move_arm(host: str, joints: list[float], goal_time: float = 0.5) -> np.ndarray:
    """Put a simulated arm somewhere by hand (through the driver) and let it settle; returns where it settled.

    To see later whether anything moved it: the simulated wrist creeps for a second after the goal time.
    """
    import trossen_arm as ta

    driver = ta.TrossenArmDriver()
    driver.configure(ta.Model.wxai_v0, ta.StandardEndEffector.wxai_v0_base, host, True, timeout=5.0)
    try:
        driver.set_all_modes(ta.Mode.position)
        driver.set_all_positions(ta.VectorDouble(joints), goal_time=goal_time, blocking=True)
        last = np.asarray(list(driver.get_all_positions()))
        for _ in range(50):
            time.sleep(0.1)
            now = np.asarray(list(driver.get_all_positions()))
            if np.abs(now - last).max() < 1e-3:
                break
            last = now
        return now[:7]
    finally:
        driver.cleanup()
