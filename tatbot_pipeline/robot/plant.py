"""The simulated arm as a plant: its MJCF with tatbot's tool and fitted servo parameters, stepped faster than real time.

The simulated controllers (robot/armsim.py) step trossen-arm-sim's arm model in real time, behind the real driver.
To fit that model to recordings (evaluation/calibration.py) and to record synthetic strokes on it (synth), this
module steps the same MJCF directly, as fast as MuJoCo goes, and feeds it what the driver would stream:

- each command becomes a segment of setpoints from the current setpoint to its target: linear for goal times up to
  `LINEAR_UP_TO_S` (the 0.2 s of a policy step), a rest-to-rest quintic above (a long move, which the backend starts
  from rest: robot/tatbot.py);
- the controller applies a setpoint `delay_s` after the driver sent it (the command delay; armsim reads it from the
  scene, so the real-time controllers play the same plant);
- each joint's position servo has its own gain `kp` and damping `kv` (MuJoCo's `position` actuator).

`write_scene` writes the arm model with these parameters as an MJCF scene any simulated controller can load. It also
swaps the WidowX gripper (fingers, camera mount: the packaged model's link_6 end) for **tatbot's tool as a collision
body**: the real tool's mesh is not public, so it is stated as shapes: a capsule for the machine on the wrist's
flange and a thin capsule, the body `needle`, for the last `NEEDLE_LENGTH_M` up to the tip at the model's `ee_site`
(where robot/kinematics.py puts the needle). The carriage bodies stay (the controller drives a gripper joint) but no
longer collide. The scene's `ee_offset` is an IK correction for arm slop (see robot/kinematics.py): it moves where
the arm is sent, not where the tool sits on it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ARM_JOINTS = 6  # joint_0..joint_5; the gripper keeps its packaged servo
PHYSICS_DT_S = 0.002  # the packaged model's timestep (MuJoCo's default)
LINEAR_UP_TO_S = 0.2  # the driver interpolates linearly up to this goal time, with a quintic above
# tatbot's tool, as shapes in link_6's frame (x along the tool): the machine from the flange, then the needle.
TOOL_RADIUS_M = 0.015
TOOL_FROM_X_M = 0.06  # past the wrist motor's housing (link_6's cylinder ends at x = 0.05)
NEEDLE_LENGTH_M = 0.012
NEEDLE_RADIUS_M = 0.001
TIP_X_M = 0.156  # the packaged model's ee_site
DELAY_NUMERIC = "tatbot_command_delay_s"  # the MJCF custom numeric armsim reads the command delay from


def _packaged_gains() -> tuple[tuple[float, ...], tuple[float, ...]]:
    text = _packaged_arm_xml()
    gains = {m["name"]: (float(m["kp"]), float(m["kv"])) for m in re.finditer(
        r'<position name="(?P<name>joint_\d)"[^>]*kp="(?P<kp>[\d.]+)" kv="(?P<kv>[\d.]+)"', text)}
    names = [f"joint_{i}" for i in range(ARM_JOINTS)]
    return tuple(gains[n][0] for n in names), tuple(gains[n][1] for n in names)


@functools.lru_cache(maxsize=1)
def _packaged_arm_xml() -> str:
    from trossen_arm_sim.sim import ARM_MODEL_PATH

    return Path(ARM_MODEL_PATH).read_text()


@dataclass(frozen=True)
class PlantParams:
    """What the fit may change: per arm joint servo gain (N·m/rad) and damping (N·m·s/rad), and the command delay."""

    kp: tuple[float, ...]
    kv: tuple[float, ...]
    delay_s: float = 0.0

    @classmethod
    def packaged(cls) -> "PlantParams":
        """trossen-arm-sim's own model: kp 200/200/200/100/50/50, kv 10/10/10/5/5/5, no delay."""
        kp, kv = _packaged_gains()
        return cls(kp, kv, 0.0)

    def __post_init__(self) -> None:
        if len(self.kp) != ARM_JOINTS or len(self.kv) != ARM_JOINTS:
            raise ValueError(f"plant parameters: {ARM_JOINTS} gains and dampings, got {len(self.kp)} and {len(self.kv)}")
        if min(self.kp) <= 0 or min(self.kv) < 0 or self.delay_s < 0:
            raise ValueError(f"plant parameters must be positive: {self}")

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "PlantParams":
        return cls(tuple(map(float, data["kp"])), tuple(map(float, data["kv"])), float(data.get("delay_s", 0.0)))


def arm_mjcf(params: PlantParams, tool: bool = True) -> str:
    """The packaged arm model with `params`' servo gains (and tatbot's tool instead of the gripper, by default);
    mesh files resolve to the installed package wherever the text is written."""
    from trossen_arm_sim.sim import ASSETS_DIR

    text = _packaged_arm_xml().replace('<compiler angle="radian"', f'<compiler meshdir="{ASSETS_DIR}" angle="radian"')
    for i in range(ARM_JOINTS):
        text, n = re.subn(rf'(<position name="joint_{i}"[^>]*)kp="[\d.]+" kv="[\d.]+"',
                          rf'\g<1>kp="{params.kp[i]:.6g}" kv="{params.kv[i]:.6g}"', text)
        if n != 1:
            raise ValueError(f"trossen-arm-sim's arm model changed: no position actuator joint_{i} with kp and kv")
    text = text.replace("<worldbody>", f'<custom>\n    <numeric name="{DELAY_NUMERIC}" data="{params.delay_s:.6g}"/>\n'
                        "  </custom>\n\n  <worldbody>", 1)
    return _with_tool(text) if tool else text


def _with_tool(text: str) -> str:
    """The gripper's collision shapes out (link_6's finger rail, the camera mount, the fingers), the tool in."""
    rail = '<geom class="collision" type="box" size="0.0125 0.094 0.031"'
    mount = '<geom class="collision" type="box" size="0.0155 0.025 0.025"'
    if rail not in text or mount not in text:
        raise ValueError("trossen-arm-sim's arm model changed: no gripper rail or camera mount collision box on link_6")
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith((rail, mount)):
            continue
        lines.append(line)
    text = "\n".join(lines) + "\n"
    # The fingers: every collision box inside a carriage body.
    text = re.sub(r'(<body name="carriage_(?:left|right)".*?</body>)',
                  lambda m: re.sub(r'\s*<geom class="collision"[^>]*/>', "", m.group(1)), text, flags=re.S)
    needle_from = TIP_X_M - NEEDLE_LENGTH_M
    tool = (f'<geom name="tool" class="collision" type="capsule" size="{TOOL_RADIUS_M}" '
            f'fromto="{TOOL_FROM_X_M} 0 0 {needle_from - TOOL_RADIUS_M:.4f} 0 0"/>\n'
            f'                  <body name="needle" pos="0 0 0">\n'
            f'                    <geom name="needle" class="collision" type="capsule" size="{NEEDLE_RADIUS_M}" '
            f'fromto="{needle_from:.4f} 0 0 {TIP_X_M - NEEDLE_RADIUS_M:.4f} 0 0"/>\n'
            f'                  </body>\n                  ')
    anchor = '<site name="ee_site"'
    if anchor not in text:
        raise ValueError("trossen-arm-sim's arm model changed: no ee_site on link_6")
    return text.replace(anchor, tool + anchor, 1)


def write_scene(out_dir: Path, params: PlantParams, tool: bool = True, name: str = "tatbot arm") -> Path:
    """`out_dir/arm.xml` (the arm with `params`) and `out_dir/scene.xml` (it on a floor), for a simulated controller;
    returns the scene's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "arm.xml").write_text(arm_mjcf(params, tool))
    scene = out_dir / "scene.xml"
    scene.write_text(f"""<mujoco model="{name}">
  <include file="arm.xml"/>
  <worldbody>
    <light pos="0 0 1.5" dir="0 0 -1" directional="true"/>
    <geom name="floor" size="0 0 0.05" type="plane"/>
  </worldbody>
</mujoco>
""")
    return scene


def command_delay_s(model) -> float:
    """The command delay a scene carries (0 for a scene without one, such as the packaged ones)."""
    import mujoco

    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_NUMERIC, DELAY_NUMERIC)
    return float(model.numeric_data[model.numeric_adr[i]]) if i >= 0 else 0.0


def segment(start: np.ndarray, target: np.ndarray, goal_time: float, elapsed: float) -> np.ndarray:
    """The driver's setpoint `elapsed` s into a command from `start` to `target`: linear up to LINEAR_UP_TO_S goal
    time, a rest-to-rest quintic above."""
    s = 1.0 if goal_time <= 0 else min(max(elapsed / goal_time, 0.0), 1.0)
    if goal_time > LINEAR_UP_TO_S:
        s = s ** 3 * (10 - 15 * s + 6 * s * s)
    return start + (target - start) * s


@dataclass
class ArmPlant:
    """One arm model stepped directly in MuJoCo (no real-time pacing, no network), for replays and fits."""

    params: PlantParams = field(default_factory=PlantParams.packaged)
    tool: bool = True

    def __post_init__(self) -> None:
        import mujoco

        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_string(arm_mjcf(self.params, self.tool))
        self.data = mujoco.MjData(self.model)
        names = [f"joint_{i}" for i in range(ARM_JOINTS)] + ["left_carriage_joint"]
        self._qpos = np.array([self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, n)]
                               for n in names])
        actuators = [f"joint_{i}" for i in range(ARM_JOINTS)] + ["left_gripper"]
        self._act = np.array([mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in actuators])
        self._low, self._high = self.model.actuator_ctrlrange[self._act].T
        self.set_params(self.params)

    def set_params(self, params: PlantParams) -> None:
        """New gains and delay without reloading the model (a fit tries hundreds)."""
        for i in range(ARM_JOINTS):
            a = self._act[i]
            self.model.actuator_gainprm[a, 0] = params.kp[i]
            self.model.actuator_biasprm[a, 1] = -params.kp[i]
            self.model.actuator_biasprm[a, 2] = -params.kv[i]
        self.params = params

    def replay(self, start: np.ndarray, actions: np.ndarray, fps: float, goal_time: float) -> np.ndarray:
        """The observed joints (T, 7) of an arm at rest at `start` (7,) sent `actions` (T, 7) at `fps`, each with
        `goal_time`: observation t is read just before command t is sent, as the recorder and the rollout loop do."""
        mj, model, data = self._mj, self.model, self.data
        start = np.asarray(start, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        mj.mj_resetData(model, data)
        data.qpos[self._qpos] = start
        setpoint = start.copy()
        data.ctrl[self._act] = np.clip(setpoint, self._low, self._high)
        mj.mj_forward(model, data)
        tick = 1.0 / fps
        steps_per_tick = max(1, round(tick / model.opt.timestep))
        delay = self.params.delay_s
        commands: list[tuple[float, np.ndarray, np.ndarray]] = []  # (sent at, from, to), as the driver streams
        applied = -1  # the newest command the controller has received by now
        states = np.empty((len(actions), len(start)))
        for t, action in enumerate(actions):
            now = t * tick
            states[t] = data.qpos[self._qpos]
            origin = segment(*commands[-1][1:], goal_time, now - commands[-1][0]) if commands else setpoint
            commands.append((now, origin, action))
            for k in range(steps_per_tick):
                at = now + k * model.opt.timestep - delay  # what the controller applies now was sent `delay` ago
                while applied + 1 < len(commands) and commands[applied + 1][0] <= at + 1e-9:
                    applied += 1
                if applied >= 0:
                    sent, origin_, target = commands[applied]
                    setpoint = segment(origin_, target, goal_time, at - sent)
                data.ctrl[self._act] = np.clip(setpoint, self._low, self._high)
                mj.mj_step(model, data)
        return states.astype(np.float32)


def replay_arms(plant: ArmPlant, start: np.ndarray, actions: np.ndarray, fps: float, goal_time: float) -> np.ndarray:
    """Both arms (14-vectors) on one plant model, arm by arm (they do not touch in the model: one arm per scene)."""
    from tatbot_pipeline.robot.spec import ARMS, arm_slice

    states = np.empty(np.shape(actions), dtype=np.float32)
    for side in ARMS:
        s = arm_slice(side)
        states[:, s] = plant.replay(np.asarray(start)[s], np.asarray(actions)[:, s], fps, goal_time)
    return states
