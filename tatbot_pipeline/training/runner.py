"""Run LeRobot's own trainer (`lerobot-train`) in a subprocess, stream its lines, resume a run from its last checkpoint.

A subprocess rather than in-process `train(cfg)`: LeRobot's entry point parses `sys.argv` (so an in-process resume
cannot be expressed cleanly), and a crash or OOM in training must not take the Dagster run worker with it.
One training at a time per pipeline home (a file lock), because two would fight for the CPU/GPU and a rerun of the
same run dir would corrupt its checkpoints; the Dagster run queue limits tagged runs too, but `dagster job execute`
and UI launches without the tag bypass it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults
from tatbot_pipeline.console import report_progress
from tatbot_pipeline.checkpoints import last_checkpoint
from tatbot_pipeline.processes import stop_process
from tatbot_pipeline.training.train_log import MetricsParser, MetricsSeries
from tatbot_pipeline.training.presets import (
    TrainOptions,
    check_multi_gpu,
    command_line,
    get_preset,
    launcher_argv,
    resume_argv,
    train_argv,
)
from tatbot_pipeline.training.tiny import ensure_tiny_smolvlm, episode_length, tiny_smolvlm_dir

log = logging.getLogger(__name__)

METRICS_FILE = "training_metrics.json"
LineCallback = Callable[[str], None]


class TrainingFailed(RuntimeError):
    """lerobot-train exited non-zero; the message carries the log path and the last lines."""


@dataclass(frozen=True)
class TrainingRun:
    """What one call to `train_policy` produced."""

    preset: str
    policy_type: str
    run_dir: Path
    steps: int
    resumed_from: int | None  # the checkpoint step it continued from, None for a fresh run
    metrics: MetricsSeries
    log_path: Path
    argv: tuple[str, ...]
    wall_s: float
    num_gpus: int = 1  # processes `accelerate launch` started (1: plain lerobot-train)

    @property
    def checkpoint_dir(self) -> Path:
        return last_checkpoint(self.run_dir)




def checkpoint_step(run_dir: Path) -> int | None:
    """Training step of the run's last checkpoint, None when it has none yet."""
    state = Path(run_dir) / "checkpoints" / "last" / "training_state" / "training_step.json"
    if not state.is_file():
        return None
    return int(json.loads(state.read_text())["step"])


def lerobot_train_command(num_gpus: int | None = None) -> list[str]:
    """`launcher_argv(num_gpus)` with this interpreter's environment's programs (not whatever is first on PATH)."""
    bin_dir = Path(sys.executable).parent
    program = launcher_argv(num_gpus)
    if program == ["lerobot-train"]:
        script = bin_dir / "lerobot-train"
        return [str(script)] if script.is_file() else [sys.executable, "-m", "lerobot.scripts.lerobot_train"]
    accelerate = bin_dir / "accelerate"
    head = [str(accelerate)] if accelerate.is_file() else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    return [*head, *program[1:]]


def training_env(hf_home: Path) -> dict[str, str]:
    """Environment of the trainer: Hugging Face caches under the pipeline home, offline unless the user opted in."""
    hf_home = Path(hf_home).absolute()
    env = dict(os.environ)
    env.update({
        "HF_HOME": str(hf_home),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "PYTHONUNBUFFERED": "1",
    })
    apply_offline_defaults(env)
    return env


@contextlib.contextmanager
def training_lock(train_dir: Path, on_line: LineCallback | None = None) -> Iterator[None]:
    """Block until no other training of this pipeline home runs (released on exit, also on a crash)."""
    train_dir.mkdir(parents=True, exist_ok=True)
    with open(train_dir / ".training.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_line:
                on_line(f"another training holds {train_dir / '.training.lock'}; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def train_policy(
    preset: str,
    dataset_root: Path,
    run_dir: Path,
    hf_home: Path,
    options: TrainOptions | None = None,
    models_home: Path | None = None,
    on_line: LineCallback | None = None,
) -> TrainingRun:
    """Train `preset` on the LeRobot dataset at `dataset_root` into `run_dir`, resuming if it holds a checkpoint.

    A run dir whose last checkpoint already reached `steps` is returned as is (a retried run that had finished
    training but failed later). The tiny backbone goes to `tiny_smolvlm_dir(models_home)` (default: the run dir's parent).
    """
    p = get_preset(preset)
    opts = p.options(options)
    check_multi_gpu(opts)
    dataset_root, run_dir = Path(dataset_root).absolute(), Path(run_dir).absolute()
    if not (dataset_root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{dataset_root}: not a LeRobot dataset (no meta/info.json) — build training_splits first")
    log_path = run_dir.parent / "logs" / f"{run_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    emit = on_line or (lambda line: log.info("%s", line))

    with training_lock(run_dir.parent, emit):
        done = checkpoint_step(run_dir)
        if done is None:
            if run_dir.exists():
                # lerobot-train refuses an existing output dir; one without a checkpoint holds nothing to keep.
                emit(f"{run_dir}: no checkpoint from an earlier attempt; starting it over")
                shutil.rmtree(run_dir)
            backbone = ensure_tiny_smolvlm(tiny_smolvlm_dir(models_home or run_dir.parent)) if p.tiny_backbone else None
            argv = train_argv(p, dataset_root, run_dir, episode_length(dataset_root), opts, tiny_backbone=backbone)
        elif done < opts.steps:
            emit(f"{run_dir}: resuming from the checkpoint at step {done} up to step {opts.steps}")
            argv = resume_argv(run_dir, opts.steps, opts.log_freq)
        else:
            emit(f"{run_dir}: last checkpoint already at step {done} >= {opts.steps}; nothing to train")
            return TrainingRun(p.name, p.policy_type, run_dir, done, done, _load_metrics(run_dir), log_path, (), 0.0)

        start = time.perf_counter()
        parser = MetricsParser(opts.log_freq, start_step=done or 0)
        summary = TrainingConsole(emit, parser, total_steps=opts.steps)
        write_command(command_path(log_path), argv, opts.num_gpus)
        _stream(lerobot_train_command(opts.num_gpus) + argv, training_env(hf_home), log_path, parser, summary)
        wall = time.perf_counter() - start

    metrics = _load_metrics(run_dir) if done is not None else MetricsSeries()
    metrics.truncate_after(done or 0)
    metrics.extend(parser.series)
    metrics.save(run_dir / METRICS_FILE)
    return TrainingRun(p.name, p.policy_type, run_dir, checkpoint_step(run_dir) or 0, done, metrics, log_path, tuple(argv), wall,
                       opts.num_gpus or 1)


def _load_metrics(run_dir: Path) -> MetricsSeries:
    path = run_dir / METRICS_FILE
    return MetricsSeries.load(path) if path.is_file() else MetricsSeries()


_PROGRESS_RE = re.compile(r"^\s*Training:\s+\d+%\|.*?\]")


def _without_progress_bar(raw: str) -> list[str]:
    """Log lines of one read, minus tqdm's progress bar.

    lerobot-train forces its bar on (`disable=inside_slurm()`), and the bar shares lines with the log via `\r`.
    """
    lines = []
    for part in raw.rstrip("\n").split("\r"):
        part = _PROGRESS_RE.sub("", part).strip()
        if part:
            lines.append(part)
    return lines


# lerobot-train's lines a person must see: problems, and where the checkpoints went.
_PROBLEM_RE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Error:|Exception")
_CHECKPOINT_RE = re.compile(r"Checkpoint policy after step (\d+)")


class TrainingConsole:
    """What a person reads of a training, out of lerobot-train's hundreds of lines: the loss about ten times over the
    run, each checkpoint saved, and every warning or error. The config dump and per-step lines stay in the log file
    (and the config in the materialization's `train_config`)."""

    def __init__(self, emit: LineCallback, parser: MetricsParser, total_steps: int, reports: int = 10) -> None:
        self.emit, self.parser, self.total = emit, parser, max(1, total_steps)
        self.every = max(1, self.total // reports)

    def __call__(self, line: str, parsed: bool) -> None:
        if parsed:
            series = self.parser.series
            step, loss = series.step[-1], series.loss[-1]
            report_progress("training", step, self.total, f"loss {loss:.4g}")
            if step % self.every == 0 or step >= self.total:
                self.emit(f"step {step}/{self.total}: loss {loss:.4g}, grad norm {series.grad_norm[-1]:.4g}")
        elif (m := _CHECKPOINT_RE.search(line)) is not None:
            self.emit(f"checkpoint saved at step {m.group(1)}")
        elif _PROBLEM_RE.search(line):
            self.emit(line)


def command_path(log_path: Path) -> Path:
    """The training's command as a script beside its log."""
    return log_path.with_suffix(".sh")


def write_command(path: Path, argv: list[str], num_gpus: int | None) -> None:
    """The exact command, runnable by hand (`bash <run>.sh`): the UI links the file instead of a line too wide to
    read."""
    path.write_text(f"#!/usr/bin/env bash\n# written by tatbot_pipeline for this training run\n"
                    f"{command_line(argv, num_gpus)}\n")


def _stream(cmd: list[str], env: dict[str, str], log_path: Path, parser: MetricsParser,
            console: Callable[[str, bool], None]) -> None:
    """Run `cmd`, sending each output line to the log file, the metrics parser and `console`; raise on failure."""
    tail: deque[str] = deque(maxlen=20)
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(f"$ {shlex.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
            cwd=log_path.parent, errors="replace",
        )
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                for line in _without_progress_bar(raw):
                    log_file.write(line + "\n")
                    tail.append(line)
                    console(line, parser.feed(line))
            rc = proc.wait()
        finally:
            stop_process(proc, 30)  # interrupted (run cancelled, KeyboardInterrupt): never leave a trainer behind
    if rc != 0:
        last = "\n".join(tail)
        raise TrainingFailed(
            f"lerobot-train exited with code {rc}; full log: {log_path}\nlast lines:\n{last}\n"
            "If it could not find a base model, download it into the pipeline's HF cache (HF_HUB_OFFLINE=0) "
            "or use an offline preset such as tiny_smolvla."
        )
