"""trossen-arm-sim with the two things of a real arm controller the fault tests need and version 0.2.3 leaves out.

- **External efforts.** The real controller reports every joint's external effort (measured effort minus what its
  dynamics model explains); trossen-arm-sim sends 0 for every joint, always, so the driver's
  `get_all_external_efforts()` could never see a collision. Here the field carries the joint torques of the contact
  forces, `J_cᵀ f_c` over MuJoCo's contact constraints: what a perfect model would leave over. The simulator, its
  MuJoCo scene, its wire protocol and its contact WebSocket are otherwise the unmodified package.
- **A hardware fault on SIGUSR1**: the controller enters an error state (`joint_overheated`), as the simulator's own
  `TrossenArmSimServer.fault()` does, which only in-process code can call.
- **A command delay**: a scene written by robot/plant.py carries the controller's command delay (fitted by the sim
  calibration); each setpoint is applied that long after it arrived, in simulated time.
- **A clean exit on SIGTERM**, so a launcher (robot/sim_controllers.py) can stop it without killing it.
- **The setpoints it receives**, with `--setpoint-log PATH`: every position setpoint the driver streams (the driver
  interpolates each command into a setpoint every cycle; a real controller sees exactly these), appended to PATH as
  float64 records `(CLOCK_MONOTONIC s, 7 positions)` twice a second (robot/setpoints.py reads them). Only changed
  setpoints are kept: an arm at rest costs nothing.

Run like the simulator itself: `python -m tatbot_pipeline.robot.armsim [scene.xml] --host 127.0.0.4 --ws-port 50104`.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

import mujoco
import numpy as np
from trossen_arm_sim.collision import CollisionMonitor
from trossen_arm_sim.collision_server import CollisionWebSocketServer
from trossen_arm_sim.protocol import ErrorState, JointOutput, Mode
from trossen_arm_sim.server import TrossenArmSimServer
from trossen_arm_sim.sim import DEFAULT_SCENE, WidowXSim

from tatbot_pipeline.robot.plant import command_delay_s

_CONTACT = (
    mujoco.mjtConstraint.mjCNSTR_CONTACT_FRICTIONLESS,
    mujoco.mjtConstraint.mjCNSTR_CONTACT_PYRAMIDAL,
    mujoco.mjtConstraint.mjCNSTR_CONTACT_ELLIPTIC,
)
STOP_TIMEOUT_S = 3.0
FAULT = ErrorState.JOINT_OVERHEATED
FAULT_REASON = "joint 2 overheated (injected by SIGUSR1)"


class ContactEffortSim(WidowXSim):
    """WidowXSim whose joint outputs carry the contact torques as external efforts."""

    def __init__(self, scene_path: str = DEFAULT_SCENE, log_setpoints: bool = False) -> None:
        super().__init__(scene_path)
        self._external = np.zeros(self.num_joints)
        self._torque = np.zeros(self.model.nv)
        self.add_step_hook(self._update_external)
        self._log_setpoints = log_setpoints
        self._setpoints: list[tuple[float, ...]] = []
        self._last_setpoint: tuple[float, ...] | None = None
        self._setpoints_lock = threading.Lock()
        self.delay_s = command_delay_s(self.model)
        self._delayed: collections.deque = collections.deque()  # (simulated time due, modes, positions)
        if self.delay_s > 0:
            self.add_step_hook(self._apply_due)

    def apply_joint_commands(self, modes, positions) -> None:
        """The simulator's own handling (after the scene's command delay), and the setpoint noted (time first, so
        the log is in arrival order)."""
        if self._log_setpoints:
            setpoint = tuple(float(p) for p in positions)
            if setpoint != self._last_setpoint and all(m == Mode.POSITION for m in modes):
                with self._setpoints_lock:
                    self._setpoints.append((time.monotonic(), *setpoint))
                self._last_setpoint = setpoint
        if self.delay_s > 0:
            self._delayed.append((self.data.time + self.delay_s, list(modes), list(positions)))
            return
        super().apply_joint_commands(modes, positions)

    def _apply_due(self) -> None:
        """Step hook (simulation lock held): the delayed commands whose time has come, as the parent applies them."""
        while self._delayed and self._delayed[0][0] <= self.data.time:
            _, modes, positions = self._delayed.popleft()
            for i in range(self.num_joints):
                if modes[i] == Mode.POSITION:
                    actuator = self._actuator_ids[i]
                    low, high = self.model.actuator_ctrlrange[actuator]
                    self.data.ctrl[actuator] = np.clip(positions[i], low, high)

    def take_setpoints(self) -> np.ndarray:
        """The setpoints noted since the last call, as an (n, 8) float64 array."""
        with self._setpoints_lock:
            taken, self._setpoints = self._setpoints, []
        return np.asarray(taken, dtype=np.float64).reshape(-1, 1 + self.num_joints)

    def _update_external(self) -> None:
        """Step hook (simulation lock held): joint torques of this step's contact forces."""
        data = self.data
        if data.nefc == 0:
            self._external = np.zeros(self.num_joints)
            return
        contact = np.isin(data.efc_type, _CONTACT)
        mujoco.mj_mulJacTVec(self.model, data, self._torque, np.where(contact, data.efc_force, 0.0))
        self._external = self._torque[self._qvel_addr].copy()

    def read_joint_outputs(self) -> list[JointOutput]:
        outputs = super().read_joint_outputs()
        with self._lock:
            external = self._external
        for out, value in zip(outputs, external):
            out.external_effort = float(value)
        return outputs


def write_setpoints(log, sim: ContactEffortSim) -> None:
    log.write(sim.take_setpoints().tobytes())
    log.flush()


def stop_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux): a launcher killed with SIGKILL leaves no simulator behind,
    and a simulator has nothing to save that a clean exit would."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request was in place
        sys.exit(0)


def main() -> None:
    stop_with_parent()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene", nargs="?", default=DEFAULT_SCENE)
    parser.add_argument("--host", required=True)
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--driver-version", default=None)
    parser.add_argument("--setpoint-log", type=Path, default=None, help="append every position setpoint received here")
    args = parser.parse_args()

    # The simulator's threads (MuJoCo stepping, TCP, UDP, WebSocket) inherit this mask: the signals go to the main
    # thread only, which runs the Python handlers at once (delivered to another thread, a handler waits for the
    # main thread to wake up).
    handled = {signal.SIGTERM, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    sim = ContactEffortSim(args.scene, log_setpoints=args.setpoint_log is not None)
    monitor = CollisionMonitor(sim)
    sim.start()
    extra = {"driver_version": args.driver_version} if args.driver_version else {}
    server = TrossenArmSimServer(sim, host=args.host, **extra)
    server.start()
    contacts = CollisionWebSocketServer(monitor, host=args.host, port=args.ws_port)
    contacts.start()
    signal.signal(signal.SIGUSR1, lambda *_: server.fault(FAULT, FAULT_REASON))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)  # one that came during start-up is delivered now
    print(f"armsim ready on {args.host}", flush=True)
    log = open(args.setpoint_log, "ab") if args.setpoint_log is not None else None
    try:
        while not stop.wait(0.5):  # timed, as a second guard: an untimed wait could sleep through a handler
            if log is not None:
                write_setpoints(log, sim)
    finally:
        if log is not None:
            write_setpoints(log, sim)
            log.close()
        # The servers' stop joins their threads, which can wait on a client that is still connected: bounded, then
        # out, so a simulator never keeps stepping MuJoCo after its launcher asked it to stop.
        stopper = threading.Thread(target=lambda: (contacts.stop(), server.stop(), sim.stop()), daemon=True)
        stopper.start()
        stopper.join(STOP_TIMEOUT_S)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
