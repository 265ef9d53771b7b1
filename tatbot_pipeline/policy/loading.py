"""Load a LeRobot checkpoint the way LeRobot does, and map tatbot observations to its features.

The checkpoint's own config decides the policy class (`PreTrainedConfig.from_pretrained` + `get_policy_class`), and
its saved pre/post processors carry the training stats, so normalisation is exactly the one it was trained with.
Two ways to ask it for actions, one per inference mode (see chunks.py):
- `act`: LeRobot's own single-step inference (`predict_action`: tensor conversion, processors, `select_action`), so
  action chunks are queued and replayed by the policy itself and a new chunk is computed inline, on the control
  thread, every `n_action_steps` steps (sync mode);
- `chunk`: one whole chunk (`predict_action_chunk`, the call `select_action` makes inside), for a worker that computes
  the next chunk while the current one executes (async mode). Flow-matching policies (SmolVLA, pi0) then take the
  not-yet-executed rest of the previous chunk and inpaint their new chunk's prefix to it: LeRobot's Real-Time
  Chunking (`enable_rtc`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tatbot_pipeline.robot.spec import NUM_JOINTS, ROBOT_TYPE

log = logging.getLogger(__name__)

STATE = "observation.state"
IMAGE_PREFIX = "observation.images."


@dataclass(frozen=True)
class Chunk:
    """One chunk of `n_action_steps` actions: `original` as the model output them (normalised, on the policy's device:
    what RTC inpaints the next chunk to), `actions` post-processed into joint targets (n, 14) for the robot."""

    original: Any  # torch.Tensor (n, action_dim)
    actions: np.ndarray  # (n, 14) float32
    rtc_merged: bool  # inpainted to the previous chunk's leftover (RTC); False for the first chunk and non-RTC policies


@dataclass(frozen=True)
class ChunkSource:
    """Where an executed action came from, recorded per step in the eval dataset."""

    index: int  # chunks computed in this rollout before it (0: the first)
    latency_s: float  # how long computing it took
    rtc_merged: bool  # inpainted to the previous chunk's leftover (RTC)
    delay_steps: int = 0  # its first actions, skipped: the previous chunk's were executed while it was computed


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

    @property
    def n_action_steps(self) -> int:
        """Actions executed from one chunk (`select_action` replays this many before computing the next)."""
        return int(getattr(self.config, "n_action_steps", 1) or 1)

    @property
    def executes_chunks(self) -> bool:
        """Whether `select_action` replays `n_action_steps` of a chunk. ACT with temporal ensembling computes a chunk
        every step and blends it with the previous ones instead: that policy has no chunk to compute ahead."""
        return getattr(self.config, "temporal_ensemble_coeff", None) is None

    @property
    def supports_rtc(self) -> bool:
        """Flow-matching policies whose LeRobot implementation has Real-Time Chunking (SmolVLA, pi0, pi0.5)."""
        return hasattr(self.config, "rtc_config") and hasattr(self.policy, "init_rtc_processor")

    @property
    def rtc_enabled(self) -> bool:
        rtc = getattr(self.config, "rtc_config", None)
        return bool(rtc is not None and rtc.enabled)

    def enable_rtc(self, execution_horizon: int) -> None:
        """Switch on LeRobot's RTC inpainting for `chunk` (async mode only: `select_action` refuses to run with it)."""
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        self.config.rtc_config = RTCConfig(enabled=True, execution_horizon=execution_horizon)
        self.policy.init_rtc_processor()

    def reset(self) -> None:
        """Clear the action queue (a new rollout must not replay the last one's chunk)."""
        self.policy.reset()

    def act(self, frame: dict[str, np.ndarray], task: str) -> np.ndarray:
        """One action (14,) for one observation frame (`observation.state` + `observation.images.*`)."""
        import torch
        from lerobot.common.control_utils import predict_action

        inputs = {k: v for k, v in frame.items() if k in self.config.input_features}
        action = predict_action(
            inputs, self.policy, torch.device(self.device), self.preprocessor, self.postprocessor,
            use_amp=False, task=task, robot_type=ROBOT_TYPE,
        )
        return action.squeeze(0).to("cpu").numpy().astype(np.float32)

    def chunk(self, frame: dict[str, np.ndarray], task: str, inference_delay: int | None = None,
              left_over: Any = None) -> Chunk:
        """The next `n_action_steps` actions for one observation frame; the same processors as `act`.

        With RTC enabled and `left_over` (the previous chunk's `original` actions not yet executed when `frame` was
        observed), the first `inference_delay` actions are inpainted to match it: they are executed from the old
        chunk while this one is computed, and the new chunk must continue from them, not jump."""
        import torch
        from lerobot.policies.utils import prepare_observation_for_inference

        inputs = {k: v for k, v in frame.items() if k in self.config.input_features}
        rtc = self.rtc_enabled and left_over is not None
        kwargs = {"inference_delay": inference_delay, "prev_chunk_left_over": left_over} if rtc else {}
        # no_grad, not inference_mode: RTC's guidance differentiates through the denoiser (torch.enable_grad inside).
        with torch.no_grad():
            batch = prepare_observation_for_inference(inputs, torch.device(self.device), task, ROBOT_TYPE)
            original = self.policy.predict_action_chunk(self.preprocessor(batch), **kwargs)[:, : self.n_action_steps]
            actions = self.postprocessor(original.clone())
        return Chunk(original.squeeze(0), actions.squeeze(0).to("cpu").numpy().astype(np.float32), rtc)


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
