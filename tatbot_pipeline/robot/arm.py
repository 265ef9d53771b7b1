"""One Trossen WidowX AI arm through its own driver, `trossen_arm`, the driver tatbot's LeRobot fork wraps.

The fork hides an arm's failures: a failed connect leaves the arm `None`, a failed read returns the home pose, a
failed command is logged and forgotten (DESIGN.md §1). Here each of them raises a RobotError that names the arm,
says what the controller reported (`get_error_information()`) and what to do. The arm's IP never appears in a
message: scene addresses are scrubbed from everything that reaches logs or Dagster metadata, so messages name the
scene key (`arms.ip_address_l`) instead.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from tatbot_pipeline.robot.base import ControllerError, FirmwareMismatch, RobotDisconnected, RobotError
from tatbot_pipeline.robot.spec import JOINTS_PER_ARM

log = logging.getLogger(__name__)

INSTALL_HINT = ("the 'tatbot' robot backend drives the arms with trossen-arm, which is not installed here — on the "
                "robot node run `TATBOT_EXTRAS=hardware ./scripts/setup.sh`, or use the 'sim' backend")
_GUIDE = "\nPlease refer to our troubleshooting guide"  # the driver appends this to every message


def import_driver() -> ModuleType:
    try:
        import trossen_arm
    except ImportError as e:
        raise RobotError(f"{INSTALL_HINT} ({e})") from e
    return trossen_arm


@dataclass(frozen=True)
class ArmConfig:
    side: str  # "left" | "right"
    ip: str
    config_file: Path | None  # the arm's trossen_arm YAML; None: the controller's own configuration (the simulator)
    connection_timeout: float

    @property
    def key(self) -> str:
        return f"arms.ip_address_{self.side[0]}"

    @property
    def label(self) -> str:
        return f"{self.side} arm ({self.key})"

    def check(self) -> None:
        """Refuse what can be known wrong before touching the network."""
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise RobotError(f"{self.label}: {self.key} is not an IP address — fix the scene") from None
        if self.config_file is not None and not self.config_file.is_file():
            raise RobotError(f"{self.side} arm: arms.arm_{self.side[0]}_config_filepath {self.config_file} does not exist — "
                             "fix the path in the scene, or remove it to use the controller's own configuration")
        if not self.connection_timeout > 0:
            raise RobotError(f"arms.connection_timeout must be > 0 s, got {self.connection_timeout}")


class TrossenArm:
    """One arm: configure without moving, read, command, close. Every driver failure becomes a RobotError."""

    def __init__(self, config: ArmConfig, driver: ModuleType) -> None:
        config.check()
        self.config = config
        self._ta = driver
        self._driver: Any = None
        self.lost = False  # the connection died mid-run (not closed by us): the arm may be anywhere
        # What this connection last commanded: (7 targets, goal time, time.monotonic() sent). Once its goal time has
        # passed, the driver's setpoint is those targets.
        self.last_command: tuple[np.ndarray, float, float] | None = None

    @property
    def connected(self) -> bool:
        return self._driver is not None

    def connect(self) -> None:
        """configure (clearing a latched error, as tatbot does), load the arm's config file, position mode. No motion."""
        ta, c = self._ta, self.config
        driver = ta.TrossenArmDriver()
        try:
            driver.configure(ta.Model.wxai_v0, ta.StandardEndEffector.wxai_v0_base, c.ip, True, timeout=c.connection_timeout)
        except Exception as e:  # noqa: BLE001 - trossen_arm raises RuntimeError/LogicError; translated below
            _close(driver)
            raise self._connect_error(e) from None
        try:
            if c.config_file is not None:
                driver.load_configs_from_file(str(c.config_file))
        except Exception as e:  # noqa: BLE001
            _close(driver)
            raise self._config_error(e) from None
        try:
            driver.set_all_modes(ta.Mode.position)
        except Exception as e:  # noqa: BLE001
            error = self._failure("switching to position mode", e, driver)
            _close(driver)
            raise error from None
        self._driver = driver
        self.lost = False
        self.last_command = None

    def positions(self) -> np.ndarray:
        return self._read("reading its joint positions", lambda d: d.get_all_positions())

    def external_efforts(self) -> np.ndarray:
        return self._read("reading its external efforts", lambda d: d.get_all_external_efforts())

    def velocities(self) -> np.ndarray:
        return self._read("reading its joint velocities", lambda d: d.get_all_velocities())

    def command(self, joints: np.ndarray, goal_time: float) -> None:
        """Start a move to 7 joint targets reached in goal_time s (non-blocking: the caller watches it)."""
        driver = self._require()
        targets = [float(v) for v in joints]
        try:
            driver.set_all_positions(self._ta.VectorDouble(targets), goal_time=goal_time, blocking=False)
        except Exception as e:  # noqa: BLE001
            raise self._lose("commanding a move", e) from None
        self.last_command = (np.asarray(targets), goal_time, time.monotonic())

    def setpoint(self) -> np.ndarray:
        """Where the driver's setpoint is once the last command's goal time has passed (waiting for that, at most
        the goal time of a non-blocking command): its targets; with no command yet on this connection, the measured
        pose (the driver starts its setpoint there)."""
        if self.last_command is None:
            return self.positions()
        targets, goal_time, sent = self.last_command
        remaining = sent + goal_time - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return targets

    def close(self) -> None:
        """cleanup(): the driver brakes the joints (idle mode) and drops the connection. Never raises."""
        driver, self._driver = self._driver, None
        if driver is not None:
            _close(driver)

    def _read(self, what: str, read: Callable[[Any], Any]) -> np.ndarray:
        driver = self._require()
        try:
            values = np.asarray(list(read(driver))[:JOINTS_PER_ARM], dtype=np.float64)
        except Exception as e:  # noqa: BLE001
            raise self._lose(what, e) from None
        if values.shape != (JOINTS_PER_ARM,):
            raise self._lose(what, RuntimeError(f"{values.size} values, expected {JOINTS_PER_ARM}"))
        return values

    def _require(self) -> Any:
        if self._driver is None:
            raise RobotDisconnected(f"{self.config.label}: not connected — connect() first")
        return self._driver

    def _lose(self, what: str, e: Exception) -> RobotError:
        """The driver failed mid-run: its daemon has stopped, so this connection is done (a reconnect starts afresh)."""
        driver, self._driver = self._driver, None
        self.lost = True
        error = self._failure(what, e, driver)
        if driver is not None:
            _close(driver)
        return error

    def _failure(self, what: str, e: Exception, driver: Any) -> RobotError:
        text = self._redact(str(e))
        info = _error_information(driver)
        info = self._redact(info) if info is not None else None
        if text.startswith("Error occurred") or (info and info.strip() != "No error"):
            detail = info if info and info.strip() != "No error" else text
            return ControllerError(f"{self.config.label}: the controller is in an error state while {what}: {detail} — "
                                   "see Trossen's troubleshooting guide; connecting again clears the error")
        return RobotDisconnected(f"{self.config.label}: stopped answering while {what} ({text}) — check its power and "
                                 "Ethernet cable")

    def _connect_error(self, e: Exception) -> RobotError:
        text = self._redact(str(e))
        c = self.config
        if "versions of the driver and controller firmware must match" in text:
            firmware = controller_firmware(self._ta, c.ip)
            driver = metadata.version("trossen-arm")
            return FirmwareMismatch(
                f"{c.label}: controller firmware {firmware} does not match the trossen_arm driver {driver} (major.minor "
                f"must be equal) — update the controller's firmware to {'.'.join(driver.split('.')[:2])}.x, or install "
                "the trossen-arm release matching the firmware")
        if text.startswith("Failed to connect"):
            return RobotDisconnected(f"{c.label}: no arm controller answered within {c.connection_timeout:g} s — check "
                                     f"the arm is powered and cabled and that {c.key} in the scene is its address")
        return RobotError(f"{c.label}: connecting failed: {text}")

    def _config_error(self, e: Exception) -> RobotError:
        key = f"arms.arm_{self.config.side[0]}_config_filepath"
        reason = self._redact(str(e)).splitlines()[0]
        return RobotError(
            f"{self.config.side} arm: the driver could not load {key} ({reason}) — a file saved by another trossen_arm "
            f"release does not load in {metadata.version('trossen-arm')} (tatbot's were saved with 1.8.5): re-save it "
            "on the robot node with TrossenArmDriver.save_configs_to_file, or remove the key to use the controller's "
            "own configuration")

    def _redact(self, text: str) -> str:
        return text.split(_GUIDE)[0].strip().replace(self.config.ip, f"<{self.config.key}>")


def controller_firmware(driver: ModuleType, ip: str) -> str:
    """The firmware version an arm controller announces (the driver's discovery probe; no configure, no motion)."""
    subnet, host = ip.rsplit(".", 1)
    try:
        found = driver.TrossenArmDriver.discover(subnet, int(host), int(host), 0.5)
    except Exception:  # noqa: BLE001 - only used to enrich a message
        return "unknown"
    return str(found[0].firmware_version) if found else "unknown"


def _error_information(driver: Any) -> str | None:
    if driver is None:
        return None
    try:
        return str(driver.get_error_information())
    except Exception as e:  # noqa: BLE001 - in an error state the driver raises the error information itself
        text = str(e).split(_GUIDE)[0].strip()
        return text if text.startswith("Error occurred") else None


def _close(driver: Any) -> None:
    try:
        driver.cleanup()
    except Exception as e:  # noqa: BLE001 - cleanup of a dead connection; nothing left to save
        log.warning("trossen_arm cleanup failed (%s)", type(e).__name__)  # its text names the arm's IP
