"""The real tatbot: two Trossen WidowX AI arms through their driver `trossen_arm`, cameras from robot/cameras.py.

This is tatbot's LeRobot robot (the fork's `lerobot.robots.tatbot`) redone on the driver directly, because the fork
cannot live next to lerobot 0.6.1 (DESIGN.md §5). Kept from the fork: one driver per arm configured from the
scene's `arms:` (IPs, config files, connection timeout), position mode, the home (sleep) pose on connect and on
disconnect at `goal_time_slow`. Changed: every failure raises (robot/arm.py), connecting checks both controllers
before either arm moves, every move passes `guard.check_command`, external efforts above
`arms.max_external_effort` (Nm, any of joints 0–5) stop the arms as a collision, and every blocking (long) move
starts from rest (`_come_to_rest`: the driver would start it with the last policy step's velocity).

`python -m tatbot_pipeline.robot.tatbot [scene]` checks the arms read-only: which controllers answer, their
firmware against this driver, their error state. It configures nothing and moves nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from tatbot_pipeline.config import RolloutLimits
from tatbot_pipeline.robot.arm import ArmConfig, TrossenArm, import_driver
from tatbot_pipeline.robot.base import Collision, Observation, Robot, RobotDisconnected, RobotError, check_frames, joints_to_dict
from tatbot_pipeline.robot.cameras import make_cameras, scene_cameras
from tatbot_pipeline.robot.guard import check_command
from tatbot_pipeline.robot.scene import RobotScene
from tatbot_pipeline.robot.setpoints import LongMove
from tatbot_pipeline.robot.spec import ARMS, JOINT_LOWER, JOINT_UPPER, arm_slice

log = logging.getLogger(__name__)

DEFAULT_CONNECTION_TIMEOUT = 6.0  # s, tatbot's conf/arms/default.yaml
# Nm on any of joints 0–5. A clean stroke stays far below; a link pressed against something reaches the joints'
# 27 Nm limit. The gripper (N) is left out: holding the tattoo tool reads as external effort by design.
DEFAULT_MAX_EXTERNAL_EFFORT = 8.0
POLL_S = 0.01  # a blocking move reads both arms this often
HOLD_GOAL_TIME = 0.1  # s, how the fork stops an arm: command where it is, quickly


def arm_config(scene: RobotScene, side: str) -> ArmConfig:
    arms, s = scene.arms, side[0]
    ip = arms.get(f"ip_address_{s}")
    if not ip:
        raise RobotError(f"scene {scene.name}: arms.ip_address_{s} is missing — the tatbot backend needs both arms' addresses")
    path = arms.get(f"arm_{s}_config_filepath")
    return ArmConfig(side=side, ip=str(ip), config_file=Path(str(path)).expanduser() if path else None,
                     connection_timeout=float(arms.get("connection_timeout", DEFAULT_CONNECTION_TIMEOUT)))


class TatbotRobot(Robot):
    name = "tatbot"

    def __init__(self, scene: RobotScene, enable_realsense: bool, camera_source: str = "realsense",
                 max_external_effort: float | None = None, limits: RolloutLimits | None = None) -> None:
        # Everything that can be known wrong is refused here, before the rollout touches anything.
        self.scene = scene
        self.limits = limits or RolloutLimits()  # the rest bounds before a long move
        driver = import_driver()
        limit = max_external_effort if max_external_effort is not None else scene.arms.get("max_external_effort", DEFAULT_MAX_EXTERNAL_EFFORT)
        self.max_external_effort = float(limit)
        if not self.max_external_effort > 0:
            raise RobotError(f"scene {scene.name}: arms.max_external_effort must be > 0 Nm, got {limit}")
        self.arms = {side: TrossenArm(arm_config(scene, side), driver) for side in ARMS}
        self.frame_source = make_cameras(camera_source, scene_cameras(scene) if enable_realsense else [])
        self.cameras = self.frame_source.cameras
        self._cameras_on = False
        self.peak_effort = {side: 0.0 for side in ARMS}  # Nm, to calibrate max_external_effort on a clean run
        self.long_moves: list[LongMove] = []  # every blocking move as sent, to check its setpoints (robot/setpoints.py)

    @property
    def is_connected(self) -> bool:
        return self._cameras_on and all(arm.connected for arm in self.arms.values())

    def connect(self) -> None:
        """Cameras, then every arm not yet connected, configured without moving; only then those arms go home."""
        home = check_command(self.scene.sleep, self.scene.goal_time_slow, "home pose on connect")
        new = [side for side, arm in self.arms.items() if not arm.connected]
        try:
            if not self._cameras_on:
                self.frame_source.connect()
                self._cameras_on = True
            for side in new:
                self.arms[side].connect()
        except RobotError:
            for side in new:
                self.arms[side].close()  # configured but never moved
            raise
        self._move(home, self.scene.goal_time_slow, new, "home pose on connect")

    def observe(self) -> Observation:
        joints = np.concatenate([self._arm(side).positions() for side in ARMS])
        self._check_efforts(ARMS)
        observation: Observation = joints_to_dict(joints)
        observation.update(self.frame_source.read(joints))
        check_frames(observation, self.cameras)
        return observation

    def send(self, joints: np.ndarray, goal_time: float, blocking: bool = False) -> np.ndarray:
        target = check_command(joints, goal_time)
        for side in ARMS:
            self._arm(side)
        if blocking:
            self._move(target, goal_time, ARMS, "move")
        else:
            self._check_efforts(ARMS)
            self._command(target, goal_time, ARMS)
        return target

    def return_to(self, pose: np.ndarray, goal_time: float,
                  report: Callable[[str], None] = lambda line: None) -> dict[str, str | None]:
        """Every arm that still answers goes to `pose` at once; only then does an arm that dropped get one reconnect
        (its connection timeout) and the same move. A controller that died never holds the live arm at its last
        pose, and the live arm passes through ready on its way home."""
        target = check_command(pose, goal_time, "return to ready")
        live = [side for side, arm in self.arms.items() if arm.connected]
        outcome: dict[str, str | None] = {}
        for side, error in self._move_each(target, goal_time, live, "return to ready").items():
            outcome[side] = None if error is None else f"{self.arms[side].config.label} did not reach ready: {error}"
            report(f"{side} arm back at ready" if error is None else outcome[side])
        for side in (s for s in ARMS if s not in live):
            arm = self.arms[side]
            report(f"{arm.config.label} is not answering: one reconnect ({arm.config.connection_timeout:g} s) to park it")
            try:
                arm.connect()
                self._move(target, goal_time, [side], "return to ready")
                outcome[side] = None
                report(f"{side} arm answered again and is back at ready")
            except RobotError as e:
                outcome[side] = f"{arm.config.label} could not be parked: {e}"
                report(outcome[side])
        return outcome

    def disconnect(self) -> None:
        """Park every arm that still answers at the home pose, then release both arms and the cameras.

        Raises a RobotError naming each arm that is not parked, after everything has been released.
        """
        problems = [f"{arm.config.label} was not parked: it stopped answering" for arm in self.arms.values() if arm.lost]
        live = [side for side, arm in self.arms.items() if arm.connected]
        if live:
            try:
                self._move(check_command(self.scene.sleep, self.scene.goal_time_slow, "home pose on disconnect"),
                           self.scene.goal_time_slow, live, "home pose on disconnect")
            except RobotError as e:
                problems.append(f"parking failed: {e}")
        for arm in self.arms.values():
            arm.close()  # trossen_arm brakes the joints (idle mode)
        if self._cameras_on:
            self._cameras_on = False
            self.frame_source.disconnect()
        log.info("peak external effort: %s (limit %g Nm, arms.max_external_effort)",
                 ", ".join(f"{side} {value:.1f} Nm" for side, value in self.peak_effort.items()), self.max_external_effort)
        if problems:
            raise RobotError("; ".join(problems))

    def _arm(self, side: str) -> TrossenArm:
        arm = self.arms[side]
        if not arm.connected:
            raise RobotDisconnected(f"{arm.config.label} is not connected")
        return arm

    def _move(self, target: np.ndarray, goal_time: float, sides: list[str] | tuple[str, ...], what: str) -> None:
        """A blocking move that keeps reading the arms: the driver's own blocking call is blind for goal_time.

        An arm that stops answering drops out and the others finish their move (an arm braked halfway is worse
        than a parked one); its error is raised at the end. A collision holds every arm at once.
        """
        failures = [e for e in self._move_each(target, goal_time, sides, what).values() if e is not None]
        if failures:
            raise failures[0]

    def _move_each(self, target: np.ndarray, goal_time: float, sides: list[str] | tuple[str, ...],
                   what: str) -> dict[str, RobotError | None]:
        """`_move`, reporting each arm's failure (None: it got there) instead of raising the first."""
        moving = list(sides)
        failures: dict[str, RobotError | None] = {side: None for side in sides}

        def each(action: Callable[[str], None]) -> None:
            for side in list(moving):
                try:
                    action(side)
                except Collision:
                    raise
                except RobotError as e:
                    moving.remove(side)
                    failures[side] = e

        each(lambda side: self._check_efforts([side]))
        for side, problem in self._come_to_rest(moving, each).items():
            moving.remove(side)
            failures[side] = RobotError(f"{self.arms[side].config.label}: {problem} — {what} not sent")
        if moving:
            self.long_moves.append(LongMove(what, tuple(moving), time.monotonic(), goal_time, target.copy()))
        each(lambda side: self.arms[side].command(target[arm_slice(side)], goal_time))
        deadline = time.monotonic() + goal_time
        while moving and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_S, remaining))
            each(lambda side: self._check_efforts([side]))
        return failures

    def settle(self, velocity_rad_s: float | None = None) -> None:
        """Hold both arms where their drivers have them and wait until they have stopped (below `velocity_rad_s`,
        default the limits' rest bound); raises RobotError naming an arm that does not. The sim evaluation starts
        every run of a stroke from rest, so that two runs of it differ by what was sent, not by how they began."""
        def each(action: Callable[[str], None]) -> None:
            for side in ARMS:
                action(side)

        still = self._come_to_rest(list(ARMS), each, velocity_rad_s)
        if still:
            raise RobotError("; ".join(f"{self.arms[side].config.label}: {problem}" for side, problem in still.items()))

    def _come_to_rest(self, sides: list[str], each: Callable[[Callable[[str], None]], None],
                      velocity_rad_s: float | None = None) -> dict[str, str]:
        """Before a long move: hold each arm at its setpoint and wait until it has stopped; returns the arms that
        did not stop within `rest_timeout_s`, each with its fastest joint (they hold where they are).

        The driver starts a quintic with the velocity it last interpolated, even when that segment ended long ago:
        right after a policy step, the park would first swing the wrong way (robot/setpoints.py). Re-sending the
        setpoint as a short (linear) segment leaves the driver nothing to carry over; the measured velocities then
        say that the arm itself has stopped. Efforts are checked on every read (a collision holds both arms)."""
        each(lambda side: self.arms[side].command(self.arms[side].setpoint(), HOLD_GOAL_TIME))
        # The hold segment must have ended too: a long move sent while it still runs was seen (1 run in 20) to start
        # with the velocity of the policy step before it, as if the hold had not been sent.
        held = time.monotonic() + HOLD_GOAL_TIME
        limit, deadline = velocity_rad_s or self.limits.rest_velocity_rad_s, held + self.limits.rest_timeout_s
        while True:
            still: dict[str, str] = {}

            def read(side: str) -> None:
                self._check_efforts([side])
                speed = np.abs(self.arms[side].velocities()[:-1])  # joints 0–5
                joint = int(np.argmax(speed))
                if speed[joint] > limit:
                    still[side] = (f"joint_{joint} still moves at {speed[joint]:.3f} rad/s {self.limits.rest_timeout_s:g}"
                                   f" s after it was held (at rest below {limit:g} rad/s; TATBOT_ROLLOUT_REST_TIMEOUT_S)"
                                   " — pushed, oscillating or not driven; it holds where it is")

            each(read)
            if (not still and time.monotonic() >= held) or time.monotonic() > deadline:
                return still
            time.sleep(POLL_S)

    def _command(self, target: np.ndarray, goal_time: float, sides: list[str] | tuple[str, ...]) -> None:
        for side in sides:
            self.arms[side].command(target[arm_slice(side)], goal_time)

    def _check_efforts(self, sides: list[str] | tuple[str, ...]) -> None:
        for side in sides:
            effort = np.abs(self.arms[side].external_efforts()[:-1])  # joints 0–5; the gripper is left out
            joint = int(np.argmax(effort))
            self.peak_effort[side] = max(self.peak_effort[side], float(effort[joint]))
            if effort[joint] > self.max_external_effort:
                held = self._hold()
                raise Collision(
                    f"{self.arms[side].config.label}: external effort {effort[joint]:.1f} Nm on joint_{joint} is above "
                    f"the {self.max_external_effort:g} Nm limit (arms.max_external_effort) — collision; {held}; clear "
                    "the workspace before the next rollout")

    def _hold(self) -> str:
        """Stop both arms where they are (commanding the measured pose), as the fork's emergency stop does."""
        current = {}
        for side, arm in self.arms.items():
            if arm.connected:
                try:
                    current[side] = np.clip(arm.positions(), JOINT_LOWER[arm_slice(side)], JOINT_UPPER[arm_slice(side)])
                except RobotError as e:
                    log.error("could not hold the %s arm: %s", side, e)
        full = self.scene.sleep.astype(np.float64).copy()  # placeholder halves for arms not read: never sent
        for side, joints in current.items():
            full[arm_slice(side)] = joints
        target = check_command(full, HOLD_GOAL_TIME, "hold after collision")
        held = []
        for side in current:
            try:
                self.arms[side].command(target[arm_slice(side)], HOLD_GOAL_TIME)
                held.append(side)
            except RobotError as e:
                log.error("could not hold the %s arm: %s", side, e)
        time.sleep(HOLD_GOAL_TIME)  # blocking, as the fork's stop: whatever moves next starts from a settled hold
        if not held:
            return "no arm could be held"
        return "both arms hold where they stopped" if len(held) == 2 else f"the {held[0]} arm holds where it stopped"


def check_arms(scene: RobotScene) -> list[str]:
    """Read-only: each arm's controller as its discovery probe reports it. Problems are lines starting with 'PROBLEM'."""
    driver = import_driver()
    version = metadata.version("trossen-arm")
    lines = [f"trossen_arm driver {version}"]
    for side in ARMS:
        config = arm_config(scene, side)
        config.check()
        subnet, host = config.ip.rsplit(".", 1)
        found = driver.TrossenArmDriver.discover(subnet, int(host), int(host), config.connection_timeout)
        if not found:  # a controller serves one client at a time: main() holds the robot lock so no rollout runs
            lines.append(f"PROBLEM {config.label}: no controller answered — check power, cable and the scene's IP")
            continue
        firmware, error = str(found[0].firmware_version), found[0].error_state
        same = firmware.split(".")[:2] == version.split(".")[:2]
        lines.append(f"{'ok' if same else 'PROBLEM'} {config.label}: model {found[0].model.name}, firmware {firmware}"
                     f"{'' if same else ' (driver needs the same major.minor)'}, error state {error.name}")
        if error.name != "none":
            lines.append(f"PROBLEM {config.label}: controller in error state {error.name} (a connect clears it)")
    return lines


def main(argv: list[str] | None = None) -> int:
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.robot.lock import RobotBusy, RobotLock
    from tatbot_pipeline.robot.scene import resolve_scene

    parser = argparse.ArgumentParser(description="read-only check of tatbot's arm controllers (moves nothing)")
    parser.add_argument("scene", nargs="?", default="default")
    args = parser.parse_args(argv)
    settings = PipelineSettings.from_env()
    scene = resolve_scene(args.scene, settings.scenes_dir)
    try:
        with RobotLock(settings.robot_state_dir, "tatbot", owner="read-only arm check"):
            lines = check_arms(scene)
    except RobotBusy as e:
        print(f"not checked: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 1 if any(line.startswith("PROBLEM") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
