"""Our val loss (`training/val_loss.py`) against lerobot 0.6.1's own held-out loss (`--dataset.eval_split`,
`--eval_steps`, issue 28), on the same tiny SmolVLA run and the same held-out episodes.

One real `lerobot-train` run of the tiny preset with `--dataset.eval_split` and `--eval_steps` equal to
`--save_freq`, so upstream scores exactly the weights each checkpoint holds. Upstream holds out the last
ceil(n * eval_split) episodes *of each task* of the training root; ours scores the split's val side, a separate
dataset. To compare the numbers, ours is run here on upstream's held-out episodes of the same root.

Printed:
- the episodes upstream holds out, on this recording and when every stroke has its own task string (tatbot's task
  is "left: <description>, right: <description>" per stroke): how much of the training data `eval_split` takes;
- per checkpoint: upstream's `eval_loss` (as lerobot-train logs it, 4 decimals), ours on the same episodes, and ours
  again with another noise seed (how much a flow-matching loss moves with its noise draws alone);
- the headline: the largest |upstream - ours|, against the 1e-6 required for adopting upstream.
Nothing is asserted.

Run: .venv/bin/python bench/bench_upstream_val_loss.py [--episodes 8] [--stroke-length 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults
from tatbot_pipeline.synth import SynthSpec, make_recordings
from tatbot_pipeline.training.presets import TrainOptions
from tatbot_pipeline.training.runner import train_policy
from tatbot_pipeline.training.val_loss import _checkpoint_loss, saved_checkpoints

apply_offline_defaults()  # before anything imports lerobot

BATCH = 4  # the tiny preset's
EVAL_LINE = re.compile(r"step (\d+): eval_loss=([0-9.]+)")


def held_out(tasks: list[str], fraction: float) -> list[int]:
    """The episodes `make_train_eval_datasets` holds out: the last ceil(n * fraction) of each task's episodes."""
    by_task: dict[str, list[int]] = {}
    for episode, task in enumerate(tasks):
        by_task.setdefault(task, []).append(episode)
    return sorted(e for eps in by_task.values() for e in eps[len(eps) - math.ceil(len(eps) * fraction):])


def ours_on(root: Path, episodes: list[int], checkpoint: Path, seed: int, batch_size: int) -> float:
    """Our val loss on `episodes` of `root`: every frame, in order, in upstream's eval batches (its training batch
    size: since 0.6.1 SmolVLA's loss is a ratio over a batch's unpadded actions, so the batching changes the value).
    The mean is over samples here and over batches there, equal for equal-sized batches."""
    import lerobot.policies  # noqa: F401 - registers the policy config classes `from_pretrained` dispatches to
    import torch
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

    cfg = PreTrainedConfig.from_pretrained(checkpoint)
    meta = LeRobotDatasetMetadata("local/bench", root=root)
    dataset = LeRobotDataset("local/bench", root=root, episodes=episodes,
                             delta_timestamps=resolve_delta_timestamps(cfg, meta), video_backend="pyav")
    batches = [torch.utils.data.default_collate([dataset[i] for i in range(k, min(k + batch_size, len(dataset)))])
               for k in range(0, len(dataset), batch_size)]
    return _checkpoint_loss(checkpoint, batches, "cpu", seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--stroke-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-split", type=float, default=0.25)
    args = parser.parse_args()
    freq = args.steps // 2

    with tempfile.TemporaryDirectory(prefix="bench-upstream-val-") as t:
        tmp = Path(t)
        [root] = make_recordings(tmp / "recordings", SynthSpec(episodes=args.episodes, stroke_length=args.stroke_length,
                                                               cameras=True, image_shape=(48, 64), seed=3))
        from tatbot_pipeline.lerobot_tables import read_episodes

        tasks = [list(t)[0] for t in read_episodes(root).column("tasks").to_pylist()]
        upstream_eval = held_out(tasks, args.eval_split)
        per_stroke = held_out([f"stroke {i}" for i in range(len(tasks))], args.eval_split)
        print(f"held out by eval_split={args.eval_split}: {len(upstream_eval)}/{len(tasks)} episodes of this recording "
              f"({len(set(tasks))} task strings); when every stroke's description differs (one task per episode): "
              f"{len(per_stroke)}/{len(tasks)} (lerobot-train then refuses: no training episode left)")

        run = train_policy("tiny_smolvla", root, tmp / "outputs" / "run", tmp / "hf",
                           TrainOptions(steps=args.steps, save_freq=freq, log_freq=freq, batch_size=BATCH,
                                        extra_args=(f"--dataset.eval_split={args.eval_split}", f"--eval_steps={freq}")),
                           models_home=tmp, on_line=lambda line: None)
        upstream = {int(s): float(v) for s, v in EVAL_LINE.findall(run.log_path.read_text())}
        worst = 0.0
        for step, checkpoint in saved_checkpoints(run.run_dir).items():
            mine, other_seed = (ours_on(root, upstream_eval, checkpoint, seed, BATCH) for seed in (0, 1))
            up = upstream.get(step, float("nan"))
            worst = max(worst, abs(up - mine))
            print(f"step {step:4d}: upstream eval_loss {up:.4f}   ours {mine:.6f}   ours, other noise seed {other_seed:.6f}"
                  f"   |upstream - ours| {abs(up - mine):.2e}")
        print(f"val loss, upstream vs ours on the same episodes and weights: max |diff| {worst:.2e} "
              f"(adopting needs <= 1e-6; upstream logs 4 decimals and draws its noise from the training RNG)")


if __name__ == "__main__":
    main()
