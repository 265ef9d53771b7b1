"""Simulated arm controllers: one trossen-arm-sim process per arm, each on its own loopback address.

On Linux all of 127.0.0.0/8 is loopback, so each simulated arm gets its own address, as each real arm has its own
controller: the driver always talks to TCP 50001 / UDP 50000 on the arm's IP, so two arms cannot share one address.
`sim_controllers()` finds two addresses whose ports are free, starts `python -m tatbot_pipeline.robot.armsim` (the
simulator plus external efforts from contacts and a fault on SIGUSR1) on each, waits until both serve the
controller's port and the contact WebSocket, and stops them whatever happens — SIGTERM, then SIGKILL after a
timeout — so no process is left behind. The armsim child also stops when its parent dies (PR_SET_PDEATHSIG, set by
the child itself: a preexec_fn is unsafe in a parent running torch's threads), so not even a killed pipeline
process leaves a simulator stepping MuJoCo at 500 Hz.

`ContactStream` collects a simulator's contact events (`snapshot`, then `begin`/`end` per touching geom pair, with
`force`/`peak_force` in N and the bodies' names) on a thread, each stamped with `received` (time.monotonic()).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tatbot_pipeline.processes import stop_process

log = logging.getLogger(__name__)

TCP_PORT = 50001  # the controller's configuration port (the driver's, fixed)
UDP_PORT = 50000  # its realtime port (fixed)
WS_PORT = 50002  # the contact stream; any port works, each simulator has its own address
ARMSIM_MODULE = "tatbot_pipeline.robot.armsim"
PLAIN_MODULE = "trossen_arm_sim"  # the unmodified simulator: no external efforts, no fault signal
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05
SIDES = ("left", "right")


class SimControllerError(RuntimeError):
    """A simulated controller could not be started (or no free address was found)."""


class AddressTaken(SimControllerError):
    """Another process holds the address's ports (taken between the check and the simulator's bind)."""


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def address_free(host: str, ws_port: int = WS_PORT) -> bool:
    """Whether a simulator could bind its three ports on `host` (TCP 50001, UDP 50000, the WebSocket port)."""
    for kind, port in ((socket.SOCK_STREAM, TCP_PORT), (socket.SOCK_DGRAM, UDP_PORT), (socket.SOCK_STREAM, ws_port)):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:  # as the simulator binds: connections in TIME_WAIT do not hold the port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_loopback_hosts(count: int, exclude: set[str] | frozenset[str] = frozenset(), ws_port: int = WS_PORT) -> list[str]:
    """`count` addresses in 127.0.0.0/8 where a simulator's ports are free.

    The scan starts at an offset derived from the process id, so evaluations started at the same moment by different
    processes rarely try the same address first (a collision is still possible: `start` retries elsewhere)."""
    if not sys.platform.startswith("linux"):
        raise SimControllerError("simulated controllers need 127.0.0.0/8 to be loopback, which only Linux has without setup")
    found: list[str] = []
    offset = os.getpid() % 200
    for i in range(200):
        host = f"127.0.{1 + (offset + i) // 250 % 4}.{2 + (offset + i) % 250}"
        if host not in exclude and host not in found and address_free(host, ws_port):
            found.append(host)
            if len(found) == count:
                return found
    raise SimControllerError(f"no {count} free loopback addresses for simulated controllers (TCP {TCP_PORT} taken on "
                             "all of those tried) — stop leftover simulators (`ps aux | grep armsim`)")


def write_obstacle_scene(path: Path, position_m, half_size_m, name: str = "obstacle") -> Path:
    """An MJCF scene: the arm (trossen-arm-sim's model), the floor and one box, for a controller's `scene`.

    Position and half sizes in metres, in the arm's base frame; contacts with it stream as geom `name`."""
    pos, size = (" ".join(f"{float(v):.4f}" for v in values) for values in (position_m, half_size_m))
    Path(path).write_text(f"""<mujoco model="tatbot {name}">
  <include file="WIDOWX_XML"/>
  <worldbody>
    <geom name="floor" size="0 0 0.05" type="plane"/>
    <geom name="{name}" type="box" size="{size}" pos="{pos}"/>
  </worldbody>
</mujoco>
""")
    return Path(path)


@dataclass
class ArmSim:
    """One simulated arm controller on one address."""

    host: str
    ws_port: int = WS_PORT
    scene: Path | None = None  # an MJCF scene including the arm (`<include file="WIDOWX_XML"/>`); None: empty scene
    module: str = ARMSIM_MODULE
    extra: list[str] = field(default_factory=list)
    log_dir: Path = Path("/tmp")
    log_setpoints: bool = False  # armsim only: every setpoint the driver streams, in `setpoint_log` (robot/setpoints.py)
    proc: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def log_path(self) -> Path:
        return Path(self.log_dir) / f"armsim-{self.host}.log"

    @property
    def setpoint_log(self) -> Path:
        return Path(self.log_dir) / f"setpoints-{self.host}.bin"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "ArmSim":
        """Start the process and return once it serves TCP 50001 and its contact WebSocket."""
        if port_open(self.host, TCP_PORT):
            raise AddressTaken(f"{self.host}:{TCP_PORT} is taken (another simulator or controller?) — stop it first")
        argv = [sys.executable, "-m", self.module, *([str(self.scene)] if self.scene else []),
                "--host", self.host, "--ws-port", str(self.ws_port), *self.extra]
        if self.log_setpoints:
            if self.module != ARMSIM_MODULE:
                raise SimControllerError(f"only {ARMSIM_MODULE} logs setpoints; this controller runs {self.module}")
            argv += ["--setpoint-log", str(self.setpoint_log)]
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not (port_open(self.host, TCP_PORT) and port_open(self.host, self.ws_port)):
            if not self.alive:
                output = self.log_path.read_text()[-2000:]
                error = AddressTaken if "Address already in use" in output else SimControllerError
                raise error(f"simulated controller on {self.host} exited (code {self.proc.returncode}): {output}")
            if time.monotonic() > deadline:
                self.stop()
                raise SimControllerError(f"simulated controller on {self.host} did not come up within {timeout_s:g} s "
                                         f"(log: {self.log_path})")
            time.sleep(POLL_S)
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; reaps the process either way."""
        if self.proc is not None and stop_process(self.proc, timeout_s):
            log.warning("simulated controller on %s ignored SIGTERM for %g s: killed it", self.host, timeout_s)

    def kill(self) -> None:
        """What a controller losing power looks like to the driver: gone, mid-conversation."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def fault(self) -> None:
        """Put the controller into an error state (`joint_overheated`); only the armsim module handles SIGUSR1."""
        if self.module != ARMSIM_MODULE:
            raise SimControllerError(f"only {ARMSIM_MODULE} can be faulted; this controller runs {self.module}")
        self.proc.send_signal(signal.SIGUSR1)


def start_pair(hosts: dict[str, str], log_dir: Path, scenes: dict[str, Path | None] | None = None,
               module: str = ARMSIM_MODULE, ws_port: int = WS_PORT, log_setpoints: bool = False) -> dict[str, ArmSim]:
    """Start one controller per side on the given addresses; on any failure, stop those already started."""
    started: dict[str, ArmSim] = {}
    try:
        for side, host in hosts.items():
            started[side] = ArmSim(host, ws_port, scene=(scenes or {}).get(side), module=module, log_dir=log_dir,
                                   log_setpoints=log_setpoints).start()
    except BaseException:
        stop_all(started.values())
        raise
    return started


def stop_all(sims) -> None:
    """Stop every controller; one that will not stop does not keep the others running."""
    errors = []
    for sim in sims:
        try:
            sim.stop()
        except OSError as e:
            errors.append(f"{sim.host}: {e}")
    if errors:
        raise SimControllerError("could not stop simulated controllers: " + "; ".join(errors))


START_ATTEMPTS = 3


@contextmanager
def sim_controllers(log_dir: Path, scenes: dict[str, Path | None] | None = None, module: str = ARMSIM_MODULE,
                    ws_port: int = WS_PORT, log_setpoints: bool = False) -> Iterator[dict[str, ArmSim]]:
    """A pair of simulated controllers (`{"left": ArmSim, "right": ArmSim}`) on free loopback addresses, stopped on
    exit whatever happened. `scenes` gives an arm its own MJCF scene (an obstacle in its path); `log_setpoints`
    keeps what each controller received (`ArmSim.setpoint_log`)."""
    sims: dict[str, ArmSim] = {}
    tried: set[str] = set()
    try:
        for attempt in range(START_ATTEMPTS):
            hosts = dict(zip(SIDES, free_loopback_hosts(2, exclude=tried, ws_port=ws_port)))
            tried.update(hosts.values())
            try:
                sims = start_pair(hosts, log_dir, scenes, module, ws_port, log_setpoints)
                break
            except AddressTaken as e:
                # Another process may have taken the address between the check and the bind: try others.
                if attempt == START_ATTEMPTS - 1:
                    raise
                log.warning("simulated controllers did not start (%s); trying other addresses", e)
        log.info("simulated controllers: left %s, right %s", sims["left"].host, sims["right"].host)
        yield sims
    finally:
        stop_all(sims.values())


class ContactStream:
    """Every message of a simulator's contact WebSocket, collected on a thread from connect to `close()`."""

    # The simulator answers the handshake from its physics process: on a loaded 2-core machine that took over 5 s.
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.events: list[dict] = []
        self._ws = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True, name=f"contacts-{url}")
        self._thread.start()
        if not self._ready.wait(timeout_s + 1) or self._ws is None:
            raise SimControllerError(f"no contact stream at {url} ({self._error or 'timed out'})")

    def _collect(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            ws = connect(self.url, open_timeout=self.timeout_s)
        except (OSError, TimeoutError) as e:
            self._error = e
            self._ready.set()
            return
        with ws:
            self._ws = ws
            self._ready.set()
            try:
                for message in ws:
                    # When it arrived (ms after the simulator saw it), to tell the phases of a run apart.
                    self.events.append({**json.loads(message), "received": time.monotonic()})
            except ConnectionClosed:
                pass

    def close(self) -> list[dict]:
        """Stop collecting; returns every message received (the first is the `snapshot`)."""
        if self._ws is not None:
            self._ws.close()
        self._thread.join(timeout=5)
        return self.events
