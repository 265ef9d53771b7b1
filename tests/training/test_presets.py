"""Presets produce the exact lerobot-train command lines, and LeRobot's own config classes accept them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tatbot_pipeline.training.presets import (
    PRESETS,
    InvalidTrainCommand,
    TrainOptions,
    get_preset,
    resume_argv,
    train_argv,
    validate_argv,
)

SPLIT = Path("/data/home/splits/v1/train")
RUN = Path("/data/home/outputs/train/pi0-abc")


def test_pi0_command_line_is_exact():
    argv = train_argv("pi0", SPLIT, RUN, chunk_size=16)
    assert argv == [
        "--dataset.repo_id=local/train",
        "--dataset.root=/data/home/splits/v1/train",
        "--dataset.video_backend=pyav",
        "--policy.path=lerobot/pi0_base",
        "--policy.n_obs_steps=1",
        "--policy.chunk_size=16",
        "--policy.n_action_steps=16",
        "--policy.scheduler_warmup_steps=1000",
        "--policy.scheduler_decay_steps=30000",
        "--policy.push_to_hub=false",
        "--output_dir=/data/home/outputs/train/pi0-abc",
        "--job_name=pi0-abc",
        "--steps=30000",
        "--batch_size=32",
        "--log_freq=100",
        "--save_freq=5000",
        "--num_workers=4",
        "--seed=1000",
        "--wandb.enable=false",
    ]


def test_pi0_preset_validates_against_lerobot_config(tmp_path):
    cfg = validate_argv(train_argv("pi0", SPLIT, tmp_path / "run", chunk_size=16), policy_type="pi0")
    assert type(cfg.policy).__name__ == "PI0Config"
    assert (cfg.policy.chunk_size, cfg.policy.n_action_steps, cfg.policy.n_obs_steps) == (16, 16, 1)
    assert cfg.policy.push_to_hub is False
    # Explicit schedule: no auto-rescaling to --steps, so a resume keeps the same learning-rate curve.
    assert cfg.scheduler.num_decay_steps == cfg.steps == 30000
    assert cfg.wandb.enable is False


def test_smolvla_preset_pads_images_to_512_and_follows_the_stroke_length(tmp_path):
    argv = train_argv("smolvla", SPLIT, tmp_path / "run", chunk_size=64, options=TrainOptions(steps=500))
    assert "--policy.path=lerobot/smolvla_base" in argv
    assert "--policy.resize_imgs_with_padding=[512,512]" in argv
    cfg = validate_argv(argv, policy_type="smolvla")
    assert cfg.policy.resize_imgs_with_padding == (512, 512)
    assert cfg.policy.chunk_size == cfg.policy.n_action_steps == 64
    assert cfg.steps == 500 and cfg.scheduler.num_warmup_steps == 50


def test_overrides_and_wandb(tmp_path):
    opts = TrainOptions(chunk_size=10, batch_size=2, wandb_project="tatbot", device="cuda")
    cfg = validate_argv(train_argv("smolvla", SPLIT, tmp_path / "run", 64, opts), policy_type="smolvla")
    assert cfg.policy.chunk_size == 10 and cfg.batch_size == 2
    assert cfg.wandb.enable and cfg.wandb.project == "tatbot" and cfg.wandb.mode == "offline"


def test_tiny_preset_uses_the_local_backbone(tmp_path):
    argv = train_argv("tiny_smolvla", SPLIT, tmp_path / "run", 8, tiny_backbone=tmp_path / "bb")
    cfg = validate_argv(argv)
    assert cfg.policy.vlm_model_name == str(tmp_path / "bb")
    assert cfg.policy.load_vlm_weights is False and cfg.policy.device == "cpu"
    assert PRESETS["tiny_smolvla"].offline and not PRESETS["pi0"].offline
    with pytest.raises(ValueError, match="tiny backbone"):
        train_argv("tiny_smolvla", SPLIT, tmp_path / "run", 8)


def test_invalid_commands_are_rejected(tmp_path):
    with pytest.raises(InvalidTrainCommand, match=r"n_action_steps \(20\) cannot be greater"):
        validate_argv(train_argv("pi0", SPLIT, tmp_path / "run", 8, TrainOptions(
            extra_args=("--policy.n_action_steps=20",))), policy_type="pi0")
    with pytest.raises(InvalidTrainCommand, match="chunk_sise"):
        validate_argv(train_argv("pi0", SPLIT, tmp_path / "r2", 8, TrainOptions(
            extra_args=("--policy.chunk_sise=8",))), policy_type="pi0")
    (tmp_path / "exists").mkdir()
    with pytest.raises(InvalidTrainCommand, match="already exists"):
        validate_argv(train_argv("pi0", SPLIT, tmp_path / "exists", 8), policy_type="pi0")
    with pytest.raises(ValueError, match="policy_type"):
        validate_argv(train_argv("pi0", SPLIT, tmp_path / "r3", 8))
    with pytest.raises(KeyError, match="choose one of"):
        get_preset("pi1")


def test_resume_argv_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_argv(tmp_path, 100)
    ckpt = tmp_path / "checkpoints" / "last" / "pretrained_model"
    ckpt.mkdir(parents=True)
    (ckpt / "train_config.json").write_text("{}")
    assert resume_argv(tmp_path, 100) == [f"--config_path={ckpt / 'train_config.json'}", "--resume=true", "--steps=100"]
