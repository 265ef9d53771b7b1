"""Multi-GPU training goes through LeRobot's documented path: `accelerate launch --multi_gpu` around lerobot_train."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from accelerate.commands.launch import launch_command_parser

from tatbot_pipeline.training.presets import TrainOptions, command_line, launcher_argv, train_argv, validate_argv
from tatbot_pipeline.training.runner import lerobot_train_command, train_policy

SPLIT = Path("/data/home/splits/v1/train")
RUN = Path("/data/home/outputs/train/smolvla-abc")


def test_multi_gpu_command_line_is_exact():
    argv = train_argv("smolvla", SPLIT, RUN, chunk_size=16, options=TrainOptions(num_gpus=4, device="cuda"))
    assert "--policy.device=cuda" in argv and "--batch_size=64" in argv  # per GPU: 4 x 64 in total
    # one flag per line, continued with backslashes: the shell reads it back as the same words
    assert command_line(argv, num_gpus=4) == (
        "accelerate launch --multi_gpu --num_processes=4 -m lerobot.scripts.lerobot_train \\\n  "
        + " \\\n  ".join(shlex.quote(a) for a in argv)
    )
    assert shlex.split(command_line(argv).replace("\\\n", "")) == ["lerobot-train", *argv]
    validate_argv(argv, policy_type="smolvla")  # the trainer's own arguments are unchanged by the launcher


def test_accelerate_parses_the_launch_the_way_it_is_meant():
    argv = ["--steps=10", "--batch_size=8"]
    cmd = lerobot_train_command(2)
    assert cmd[0] == str(Path(sys.executable).parent / "accelerate") and cmd[1] == "launch"
    args = launch_command_parser().parse_args([*cmd[2:], *argv])
    assert args.multi_gpu and args.num_processes == 2 and args.module
    assert args.training_script == "lerobot.scripts.lerobot_train" and args.training_script_args == argv


def test_one_gpu_keeps_the_plain_trainer():
    assert launcher_argv(None) == launcher_argv(1) == ["lerobot-train"]
    assert lerobot_train_command(1) == [str(Path(sys.executable).parent / "lerobot-train")]
    with pytest.raises(ValueError, match="at least one"):
        launcher_argv(0)


def test_multi_gpu_on_a_cpu_preset_is_refused_before_training(tmp_path: Path):
    dataset = tmp_path / "split"
    (dataset / "meta").mkdir(parents=True)
    (dataset / "meta" / "info.json").write_text("{}")
    with pytest.raises(ValueError, match="num_gpus=2 needs --policy.device=cuda"):
        train_policy("tiny_smolvla", dataset, tmp_path / "run", tmp_path / "hf", TrainOptions(num_gpus=2))
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()
