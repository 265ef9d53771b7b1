"""Arm controllers for the tatbot backend's tests: trossen-arm-sim processes on loopback aliases.

On Linux all of 127.0.0.0/8 is loopback, so each simulated arm gets its own address, as each real arm has its own
controller (the driver always talks to TCP 50001 / UDP 50000 on the arm's IP). The pair the README's
hardware-in-the-loop demo uses (127.0.0.2 left, 127.0.0.3 right) runs once per test module; tests that kill a
simulator or need another scene start their own on 127.0.0.4 and up. The checkpoints come from tests/inference.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.inference.conftest import act_checkpoint, checkpoint_home  # noqa: F401  (shared session fixtures)

REPO = Path(__file__).resolve().parents[2]
TCP_PORT = 50001  # the controller's configuration port; UDP 50000 is the realtime one
LEFT, RIGHT = "127.0.0.2", "127.0.0.3"
WS_PORTS = {LEFT: 50102, RIGHT: 50103}
START_TIMEOUT_S = 60.0


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass
class ArmSim:
    """One simulated arm controller: `python -m trossen_arm_sim` (or the tests' armsim harness) on one address."""

    host: str
    ws_port: int
    scene: Path | None = None
    module: str = "trossen_arm_sim"
    extra: list[str] = field(default_factory=list)
    log_dir: Path = Path("/tmp")
    proc: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ArmSim":
        if _port_open(self.host, TCP_PORT):
            pytest.fail(f"{self.host}:{TCP_PORT} is taken (another simulator or controller?) — stop it first")
        argv = [sys.executable, "-m", self.module, *([str(self.scene)] if self.scene else []),
                "--host", self.host, "--ws-port", str(self.ws_port), *self.extra]
        with open(self.log_dir / f"armsim-{self.host}.log", "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_port_open(self.host, TCP_PORT) and _port_open(self.host, self.ws_port)):
            if not self.alive:
                pytest.fail(f"simulator on {self.host} exited: {(self.log_dir / f'armsim-{self.host}.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"simulator on {self.host} did not come up within {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """What a controller losing power looks like to the driver: gone, mid-conversation."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def fault(self) -> None:
        """Put the controller into an error state (only the armsim harness handles SIGUSR1)."""
        assert self.module == "tests.robot.armsim"
        self.proc.send_signal(signal.SIGUSR1)


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
    sims = {side: ArmSim(host, WS_PORTS[host], log_dir=logs) for side, host in (("left", LEFT), ("right", RIGHT))}
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


class ContactStream:
    """Every message of a simulator's contact WebSocket, collected on a thread while the test runs."""

    def __init__(self, url: str) -> None:
        self.events: list[dict] = []
        self._ws = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._collect, args=(url,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), f"no contact stream at {url}"

    def _collect(self, url: str) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(url) as ws:
            self._ws = ws
            self._ready.set()
            try:
                for message in ws:
                    self.events.append(json.loads(message))
            except ConnectionClosed:
                pass

    def close(self) -> list[dict]:
        self._ws.close()
        self._thread.join(timeout=5)
        return self.events
