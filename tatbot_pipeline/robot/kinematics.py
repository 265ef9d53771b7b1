"""Forward kinematics of one WidowX AI arm: where the needle tip is, in mm in the arm's base frame.

The model is the MJCF trossen-arm-sim ships (`wxai_follower.xml`), the same one the simulated controllers step, so
the sim evaluation measures paths with the geometry that drew them. The tip is its `ee_site` (on link_6, at the
gripper's tip, where tatbot's needle is held), computed by MuJoCo's `mj_kinematics` on a model loaded once.

The scene's `arms.ee_offset_l/r` is, in tatbot (`gen/batch.py`), a correction for arm slop added to every IK target
("add ee_offset in world frame") before the joints are solved: the arm is commanded to `path + offset` so the
needle lands on `path`. So the needle tip is `FK(joints) - offset`. Being constant, it shifts the recorded and the
simulated path alike and cancels in their distance; it matters for where the drawn path is, not for its deviation.
(Tatbot's world frame and the arm's base frame differ by the base's mounting rotation, which lives in tatbot's URDF,
not in its public repo: the offset is applied as given, in the base frame.)
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from tatbot_pipeline.robot.spec import ARMS, JOINTS_PER_ARM

TIP_SITE = "ee_site"
ARM_JOINTS = [f"joint_{i}" for i in range(JOINTS_PER_ARM - 1)]


class ArmKinematics:
    """The arm model, loaded once; `tip_mm` is thread-safe (one MjData, behind a lock)."""

    def __init__(self) -> None:
        import mujoco
        from trossen_arm_sim.sim import ARM_MODEL_PATH

        self._mujoco = mujoco
        self.model = mujoco.MjModel.from_xml_path(ARM_MODEL_PATH)
        self.data = mujoco.MjData(self.model)
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, TIP_SITE)
        if self._site < 0:
            raise ValueError(f"{ARM_MODEL_PATH}: no site {TIP_SITE!r} — trossen-arm-sim's arm model changed")
        self._qpos = np.array([self.model.jnt_qposadr[mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)]
                               for name in ARM_JOINTS])
        self._lock = threading.Lock()

    def tip_mm(self, joints: np.ndarray) -> np.ndarray:
        """Tip positions (..., 3) in mm in the base frame, for joints (..., 7) or (..., 6) (the gripper is ignored:
        it does not move the tip)."""
        joints = np.asarray(joints, dtype=np.float64)
        flat = joints.reshape(-1, joints.shape[-1])[:, : len(ARM_JOINTS)]
        out = np.empty((len(flat), 3))
        with self._lock:
            for i, q in enumerate(flat):
                self.data.qpos[self._qpos] = q
                self._mujoco.mj_kinematics(self.model, self.data)
                out[i] = self.data.site_xpos[self._site]
        return (out * 1000.0).reshape(*joints.shape[:-1], 3)


@functools.lru_cache(maxsize=1)
def arm_kinematics() -> ArmKinematics:
    """The one model of this process (loading it takes ~10 ms; every stroke of an evaluation shares it)."""
    return ArmKinematics()


def ee_offsets_mm(scene_data: dict[str, Any]) -> dict[str, np.ndarray]:
    """The scene's `arms.ee_offset_l/r` (`{"xyz": [m, m, m]}`) in mm per arm; zero when the scene has none."""
    arms = scene_data.get("arms") or {}
    offsets = {}
    for side in ARMS:
        value = arms.get(f"ee_offset_{side[0]}") or {}
        xyz = value.get("xyz") if isinstance(value, dict) else value
        offset = np.zeros(3) if xyz is None else np.asarray(xyz, dtype=np.float64).reshape(-1)
        if offset.shape != (3,) or not np.isfinite(offset).all():
            raise ValueError(f"arms.ee_offset_{side[0]}: expected xyz of 3 finite numbers in m, got {xyz!r}")
        offsets[side] = offset * 1000.0
    return offsets


def needle_tip_mm(joints: np.ndarray, offset_mm: np.ndarray | None = None) -> np.ndarray:
    """The needle tip (..., 3) in mm in the arm's base frame for one arm's joints (..., 7): FK minus the scene's
    slop correction (see the module docstring)."""
    tip = arm_kinematics().tip_mm(joints)
    return tip if offset_mm is None else tip - np.asarray(offset_mm, dtype=np.float64)


def tip_deviation_mm(recorded: np.ndarray, simulated: np.ndarray, offset_mm: np.ndarray | None = None) -> np.ndarray:
    """Per step, the distance in mm between the needle tips of two joint paths (T, 7) of one arm."""
    recorded, simulated = np.asarray(recorded), np.asarray(simulated)
    if recorded.shape != simulated.shape:
        raise ValueError(f"recorded {recorded.shape} and simulated {simulated.shape} joint paths differ in shape")
    return np.linalg.norm(needle_tip_mm(recorded, offset_mm) - needle_tip_mm(simulated, offset_mm), axis=-1)
