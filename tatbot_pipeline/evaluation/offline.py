"""Open-loop replay of held-out episodes through a checkpoint, the way the robot would call it.

Each val episode starts with `policy.reset()`. Every `n_action_steps` frames the policy computes a chunk from that
frame (`LoadedPolicy.chunk`: the processors and `predict_action_chunk`, the call `select_action` makes inside) and
the next `n_action_steps` predicted actions come from it, exactly what `select_action` replays on the robot; each
predicted action is compared with the one tatbot recorded. The latency measured is that of a whole chunk — what a
sync rollout waits for at every chunk seam and an async one must hide (policy/modes.py) — not the mean over
steps, most of which only pop a queue. Policies without chunks to replay (ACT's temporal ensembling) go through
`select_action` every frame, each call a chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tatbot_pipeline.evaluation.action_errors import ActionErrors, Latency, action_errors, latency
from tatbot_pipeline.policy.loading import IMAGE_PREFIX, STATE, LoadedPolicy, load_policy

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
    latency: Latency  # per chunk computed
    n_action_steps: int
    traces: list[EpisodeTrace] = field(repr=False, default_factory=list)

    def summary(self) -> dict:
        return {
            "checkpoint": self.checkpoint, "policy_type": self.policy_type, "device": self.device,
            "val_root": self.val_root, "fps": self.fps, "episodes": self.episodes, "frames": self.frames,
            "errors": self.errors.to_dict(), "latency": self.latency.to_dict(), "n_action_steps": self.n_action_steps,
        }


def frame_to_observation(item: dict) -> dict[str, np.ndarray]:
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
    """Replay `val_root` (a LeRobot dataset) through `checkpoint` and measure action error and chunk latency."""
    import lerobot.policies  # noqa: F401  registers the policy configs; a fresh run process has not imported them
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    checkpoint, val_root = Path(checkpoint), Path(val_root)
    if not (val_root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{val_root}: not a LeRobot dataset — materialize training_splits first")
    policy_type = PreTrainedConfig.from_pretrained(checkpoint).type
    policy = load_policy(checkpoint, policy_type, device)
    dataset = LeRobotDataset(f"local/{val_root.name}", root=val_root, video_backend="pyav")
    n_action_steps = policy.n_action_steps
    episodes = list(range(dataset.num_episodes))[: max_episodes or None]
    if not episodes:
        raise ValueError(f"{val_root}: the val split has no episodes — lower val_fraction or add recordings")

    traces, steps, times = [], [], []
    for n, ep in enumerate(episodes):
        start = int(dataset.meta.episodes["dataset_from_index"][ep])
        end = int(dataset.meta.episodes["dataset_to_index"][ep])
        recorded, predicted = _replay_episode(policy, dataset, range(start, end), times)
        traces.append(EpisodeTrace(ep, np.stack(recorded), np.stack(predicted)))
        steps.extend(t % n_action_steps for t in range(end - start))
        if progress:
            progress(f"evaluated episode {n + 1}/{len(episodes)} ({end - start} frames)")

    recorded_all = np.concatenate([t.recorded for t in traces])
    predicted_all = np.concatenate([t.predicted for t in traces])
    return OfflineEval(
        checkpoint=str(checkpoint), policy_type=policy_type, device=policy.device, val_root=str(val_root),
        fps=float(dataset.fps), episodes=len(traces), frames=len(recorded_all),
        errors=action_errors(predicted_all, recorded_all, np.array(steps), not_predicted=constant_joints(checkpoint)),
        latency=latency(np.array(times)), traces=traces, n_action_steps=n_action_steps,
    )


def constant_joints(checkpoint: Path, eps: float = 1e-6) -> tuple[str, ...]:
    """Joints whose actions never varied in the training data (std ~0 in the checkpoint's normaliser stats): the
    policy does not predict them, it repeats their mean."""
    from safetensors.numpy import load_file

    from tatbot_pipeline.robot.spec import JOINT_NAMES

    files = sorted(Path(checkpoint).glob("policy_preprocessor_step_*_normalizer_processor.safetensors"))
    std = load_file(files[0]).get("action.std") if files else None
    if std is None or len(std) != len(JOINT_NAMES):
        return ()
    return tuple(j for j, s in zip(JOINT_NAMES, std) if s < eps)


def _replay_episode(policy: LoadedPolicy, dataset, indices: range, times: list[float]) -> tuple[list, list]:
    """Recorded and predicted actions of one episode; appends each chunk's compute time to `times`."""
    policy.reset()
    every = policy.n_action_steps if policy.executes_chunks else 1
    recorded, predicted, chunk = [], [], None
    for t, idx in enumerate(indices):
        item = dataset[idx]
        if t % every == 0:
            obs = frame_to_observation(item)
            started = time.perf_counter()
            chunk = policy.chunk(obs, item["task"]).actions if every > 1 else policy.act(obs, item["task"])[None]
            times.append(time.perf_counter() - started)
        predicted.append(chunk[t % every])
        recorded.append(item["action"].numpy())
    return recorded, predicted
