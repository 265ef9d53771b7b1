"""Load a LeRobot checkpoint the way LeRobot does, and map tatbot observations to its features.

The checkpoint's own config decides the policy class (`PreTrainedConfig.from_pretrained` + `get_policy_class`), and
its saved pre/post processors carry the training stats, so normalisation is exactly the one it was trained with.
`predict_action` is LeRobot's own single-step inference (tensor conversion, processors, `select_action`), so action
chunks are queued and replayed by the policy itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tatbot_pipeline.robot.spec import NUM_JOINTS

log = logging.getLogger(__name__)

STATE = "observation.state"
IMAGE_PREFIX = "observation.images."
ROBOT_TYPE = "tatbot"


def resolve_device(requested: str) -> tuple[str, str | None]:
    """The torch device to use and, when CUDA was asked for but is absent, a note saying so."""
    import torch

    if requested not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        return "cpu", "CUDA is not available on this machine: running the policy on CPU"
    return requested, None


@dataclass
class LoadedPolicy:
    path: Path
    type: str
    config: Any
    policy: Any
    preprocessor: Any
    postprocessor: Any
    device: str

    @property
    def cameras(self) -> dict[str, tuple[int, int]]:
        """Cameras the policy looks at, name -> (height, width) it was trained on."""
        return {
            key.removeprefix(IMAGE_PREFIX): (int(ft.shape[-2]), int(ft.shape[-1]))
            for key, ft in self.config.input_features.items()
            if key.startswith(IMAGE_PREFIX)
        }

    def reset(self) -> None:
        """Clear the action queue (a new rollout must not replay the last one's chunk)."""
        self.policy.reset()

    def act(self, frame: dict[str, np.ndarray], task: str) -> np.ndarray:
        """One action (14,) for one observation frame (`observation.state` + `observation.images.*`)."""
        import torch
        from lerobot.utils.control_utils import predict_action

        inputs = {k: v for k, v in frame.items() if k in self.config.input_features}
        action = predict_action(
            inputs, self.policy, torch.device(self.device), self.preprocessor, self.postprocessor,
            use_amp=False, task=task, robot_type=ROBOT_TYPE,
        )
        return action.squeeze(0).to("cpu").numpy().astype(np.float32)


def load_policy(path: Path, policy_type: str, device: str) -> LoadedPolicy:
    """Load `path` (a `pretrained_model` dir). `policy_type` must match the type its config.json declares."""
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no config.json — pass a LeRobot checkpoint dir such as "
            "outputs/train/<run>/checkpoints/last/pretrained_model"
        )
    config = _read_config(path)
    if config.type != policy_type:
        raise ValueError(f"{path}: the checkpoint is a '{config.type}' policy, not '{policy_type}' — pass policy='{config.type}'")
    _check_features(path, config)
    config.device = device
    policy = get_policy_class(config.type).from_pretrained(path, config=config)
    policy.eval()
    preprocessor, postprocessor = make_pre_post_processors(
        config, pretrained_path=str(path), preprocessor_overrides={"device_processor": {"device": device}}
    )
    log.info("loaded %s policy from %s on %s", config.type, path, device)
    return LoadedPolicy(path, config.type, config, policy, preprocessor, postprocessor, device)


def _read_config(path: Path) -> Any:
    """The checkpoint's PreTrainedConfig; a config.json LeRobot cannot parse is one short line, not a field dump."""
    import draccus
    from lerobot.configs.policies import PreTrainedConfig

    try:
        return PreTrainedConfig.from_pretrained(path)
    except draccus.utils.DraccusException as e:
        declared = _declared_type(path / "config.json")
        detail = str(e).splitlines()[0]
        if len(detail) > 160:
            detail = detail[:160] + "…"
        raise ValueError(f"{path}/config.json is not a valid LeRobot '{declared}' policy config ({detail}) — its type and "
                         "its fields disagree, or the type is unknown to this LeRobot; use the checkpoint as "
                         "lerobot-train saved it") from None


def _declared_type(config_json: Path) -> str:
    import json

    try:
        return str(json.loads(config_json.read_text()).get("type"))
    except (OSError, ValueError, AttributeError):
        return "?"


def _check_features(path: Path, config: Any) -> None:
    """Refuse a checkpoint trained on something other than tatbot's 14 joints (+ cameras)."""
    unknown = [k for k in config.input_features if k != STATE and not k.startswith(IMAGE_PREFIX)]
    if unknown:
        raise ValueError(f"{path}: the policy expects inputs the tatbot does not provide: {unknown}")
    state = config.input_features.get(STATE)
    if state is not None and tuple(state.shape) != (NUM_JOINTS,):
        raise ValueError(f"{path}: observation.state has shape {tuple(state.shape)}, the tatbot has ({NUM_JOINTS},)")
    action = config.output_features.get("action")
    if action is None or tuple(action.shape) != (NUM_JOINTS,):
        shape = None if action is None else tuple(action.shape)
        raise ValueError(f"{path}: action shape {shape}, the tatbot takes ({NUM_JOINTS},) joint targets")
