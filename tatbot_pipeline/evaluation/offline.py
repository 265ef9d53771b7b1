"""Open-loop replay of held-out episodes through a checkpoint, the way the robot would call it.

Each val episode starts with `policy.reset()`; every recorded frame goes through LeRobot's own single-step inference
(`LoadedPolicy.act`: processors + `select_action`, so action chunks are queued exactly as on the robot), and the
predicted action is compared with the one tatbot recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatbot_pipeline.evaluation.metrics import ActionErrors, Latency, action_errors, latency
from tatbot_pipeline.inference.policy import IMAGE_PREFIX, STATE, load_policy

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class EpisodeTrace:
    episode: int
    recorded: np.ndarray  # (T, 14)
    predicted: np.ndarray  # (T, 14)


@dataclass
class OfflineEval:
    checkpoint: str
    policy_type: str
    device: str
    val_root: str
    fps: float
    episodes: int
    frames: int
    errors: ActionErrors
    latency: Latency
    traces: list[EpisodeTrace] = field(repr=False, default_factory=list)

    def summary(self) -> dict:
        return {
            "checkpoint": self.checkpoint, "policy_type": self.policy_type, "device": self.device,
            "val_root": self.val_root, "fps": self.fps, "episodes": self.episodes, "frames": self.frames,
            "errors": self.errors.to_dict(), "latency": self.latency.to_dict(),
        }


def _frame_to_observation(item: dict) -> dict[str, np.ndarray]:
    """A LeRobotDataset item (CHW float images) back into what the robot hands the policy (HWC uint8 images)."""
    obs = {STATE: item[STATE].numpy().astype(np.float32)}
    for key, value in item.items():
        if key.startswith(IMAGE_PREFIX):
            obs[key] = (value.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return obs


def evaluate_checkpoint(
    checkpoint: Path, val_root: Path, device: str = "cpu", max_episodes: int | None = None,
    progress: Progress | None = None,
) -> OfflineEval:
    """Replay `val_root` (a LeRobot dataset) through `checkpoint` and measure action error and latency."""
    import lerobot.policies  # noqa: F401  registers the policy configs; a fresh run process has not imported them
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    checkpoint, val_root = Path(checkpoint), Path(val_root)
    if not (val_root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{val_root}: not a LeRobot dataset — materialize training_splits first")
    policy_type = PreTrainedConfig.from_pretrained(checkpoint).type
    policy = load_policy(checkpoint, policy_type, device)
    dataset = LeRobotDataset(f"local/{val_root.name}", root=val_root, video_backend="pyav")
    n_action_steps = int(getattr(policy.config, "n_action_steps", 1) or 1)
    episodes = list(range(dataset.num_episodes))[: max_episodes or None]
    if not episodes:
        raise ValueError(f"{val_root}: the val split has no episodes — lower val_fraction or add recordings")

    traces, steps, times = [], [], []
    for n, ep in enumerate(episodes):
        start = int(dataset.meta.episodes["dataset_from_index"][ep])
        end = int(dataset.meta.episodes["dataset_to_index"][ep])
        policy.reset()
        recorded, predicted = [], []
        for t, idx in enumerate(range(start, end)):
            item = dataset[idx]
            obs = _frame_to_observation(item)
            t0 = time.perf_counter()
            with torch.inference_mode():
                action = policy.act(obs, item["task"])
            times.append(time.perf_counter() - t0)
            predicted.append(action)
            recorded.append(item["action"].numpy())
            steps.append(t % n_action_steps)
        traces.append(EpisodeTrace(ep, np.stack(recorded), np.stack(predicted)))
        if progress:
            progress(f"evaluated episode {n + 1}/{len(episodes)} ({end - start} frames)")

    recorded_all = np.concatenate([t.recorded for t in traces])
    predicted_all = np.concatenate([t.predicted for t in traces])
    return OfflineEval(
        checkpoint=str(checkpoint), policy_type=policy_type, device=policy.device, val_root=str(val_root),
        fps=float(dataset.fps), episodes=len(traces), frames=len(recorded_all),
        errors=action_errors(predicted_all, recorded_all, np.array(steps)),
        latency=latency(np.array(times)), traces=traces,
    )
