"""The real `lerobot-train` starts on a merged train split (tiny ACT, CPU, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tatbot_pipeline.datasets.build import build_splits
from tatbot_pipeline.datasets.split import SplitConfig
from tests.datasets.reports import rec_name, write_report


def test_lerobot_train_runs_two_steps_on_the_train_split(settings, recording_copy, tmp_path):
    write_report(settings, recording_copy(rec_name(1)), excluded={3: "black frame"})
    write_report(settings, recording_copy(rec_name(2)))
    train = build_splits(settings, SplitConfig(val_fraction=0.3, salt="train-test")).root / "train"
    out = tmp_path / "run"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [
        str(Path(sys.executable).with_name("lerobot-train")),
        "--policy.type=act", "--policy.pretrained_backbone_weights=null", "--policy.dim_model=32",
        "--policy.n_heads=2", "--policy.dim_feedforward=64", "--policy.n_encoder_layers=1",
        "--policy.n_decoder_layers=1", "--policy.latent_dim=8", "--policy.chunk_size=8", "--policy.n_action_steps=8",
        "--policy.device=cpu", "--policy.push_to_hub=false", "--wandb.enable=false",
        "--steps=2", "--batch_size=2", "--num_workers=0", "--log_freq=1", "--save_checkpoint=false",
        "--dataset.repo_id=local/train", f"--dataset.root={train}", "--dataset.video_backend=pyav",
        f"--output_dir={out}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "step:2" in log and "End of training" in log
    n_frames = int(next(line for line in log.splitlines() if "dataset.num_frames=" in line).split("=")[1].split()[0])
    assert n_frames == 8 * train_episodes(train)


def train_episodes(root: Path) -> int:
    import json

    return json.loads((root / "meta" / "info.json").read_text())["total_episodes"]
