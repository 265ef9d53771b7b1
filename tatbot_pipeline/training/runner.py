"""Run LeRobot's own trainer (`lerobot-train`) in a subprocess, stream its lines, resume a run from its last checkpoint.

A subprocess rather than in-process `train(cfg)`: LeRobot's entry point parses `sys.argv` (so an in-process resume
cannot be expressed cleanly), and a crash or OOM in training must not take the Dagster run worker with it.
One training at a time per pipeline home (a file lock), because two would fight for the CPU/GPU and a rerun of the
same run dir would corrupt its checkpoints; the Dagster run queue limits tagged runs too, but `dagster job execute`
and UI launches without the tag bypass it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
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
from tatbot_pipeline.training.preflight import preflight
from tatbot_pipeline.training.train_log import ATTEMPT_HEADER, MetricsParser, MetricsSeries, parse_attempts
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
    attempts: int = 1  # lerobot-train processes this run dir took, killed ones included (from its log)

    @property
    def checkpoint_dir(self) -> Path:
        return last_checkpoint(self.run_dir)




def checkpoint_step(run_dir: Path) -> int | None:
    """Training step of the run's last checkpoint, None when it has none yet."""
    state = Path(run_dir) / "checkpoints" / "last" / "training_state" / "training_step.json"
    if not state.is_file():
        return None
    return int(json.loads(state.read_text())["step"])


def unfinished_runs(train_dir: Path, preset: str, dataset_root: Path) -> list[tuple[Path, int]]:
    """Run dirs of `preset` that trained on `dataset_root` and whose last checkpoint stopped short of their steps."""
    found = []
    for run_dir in sorted(Path(train_dir).glob(f"{preset}-*")):
        step = checkpoint_step(run_dir)
        if step is None:
            continue
        try:
            cfg = json.loads((last_checkpoint(run_dir) / "train_config.json").read_text())
        except (OSError, ValueError):
            continue
        if Path(cfg["dataset"]["root"]) == Path(dataset_root).absolute() and step < int(cfg["steps"]):
            found.append((run_dir, step))
    return found


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
    lock: bool = True,
) -> TrainingRun:
    """Train `preset` on the LeRobot dataset at `dataset_root` into `run_dir`, resuming if it holds a checkpoint.

    A run dir whose last checkpoint already reached `steps` is returned as is (a retried run that had finished
    training but failed later). The tiny backbone goes to `tiny_smolvlm_dir(models_home)` (default: the run dir's
    parent). `lock=False`: the caller already holds `training_lock(run_dir.parent)` (the asset holds it over its
    checks too). The split and the output dir are checked first (`preflight`), so a broken file fails in seconds.
    """
    p = get_preset(preset)
    opts = p.options(options)
    check_multi_gpu(opts)
    dataset_root, run_dir = Path(dataset_root).absolute(), Path(run_dir).absolute()
    if not (dataset_root / "meta" / "info.json").is_file():
        raise FileNotFoundError(f"{dataset_root}: not a LeRobot dataset (no meta/info.json) — build training_splits first")
    emit = on_line or (lambda line: log.info("%s", line))
    preflight(dataset_root, run_dir)
    log_path = run_dir.parent / "logs" / f"{run_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    with training_lock(run_dir.parent, emit) if lock else contextlib.nullcontext():
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
            metrics, attempts = run_metrics(run_dir, log_path, opts.log_freq)
            return TrainingRun(p.name, p.policy_type, run_dir, done, done, metrics, log_path, (), 0.0,
                               attempts=attempts)

        start = time.perf_counter()
        parser = MetricsParser(opts.log_freq, start_step=done or 0)
        summary = TrainingConsole(emit, parser, total_steps=opts.steps)
        write_command(command_path(log_path), argv, opts.num_gpus)
        try:
            _stream(lerobot_train_command(opts.num_gpus) + argv, training_env(hf_home), log_path, parser, summary,
                    start_step=done or 0)
        finally:  # a failed attempt's steps count too: the next one resumes after them
            metrics, attempts = run_metrics(run_dir, log_path, opts.log_freq)
        wall = time.perf_counter() - start

    return TrainingRun(p.name, p.policy_type, run_dir, checkpoint_step(run_dir) or 0, done, metrics, log_path,
                       tuple(argv), wall, opts.num_gpus or 1, attempts)


def run_metrics(run_dir: Path, log_path: Path, log_freq: int) -> tuple[MetricsSeries, int]:
    """The run's metrics over every attempt, and how many there were: read from its log, which every attempt
    appends to as it goes (so a killed worker's steps are there too), and saved beside the checkpoints.

    Steps from before the log's first attempt (a run dir moved from elsewhere) come from the saved metrics.
    """
    attempts = parse_attempts(_log_lines(log_path), log_freq)
    metrics = _load_metrics(run_dir)
    metrics.truncate_after(attempts.first_start)
    metrics.extend(attempts.series)
    if run_dir.is_dir():
        metrics.save(run_dir / METRICS_FILE)
    return metrics, attempts.count


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


# torchcodec's report of every FFmpeg version it could not load (dozens of lines, a traceback each) when the machine
# has none it supports; lerobot then decodes with pyav, which the presets ask for anyway.
_TORCHCODEC_START = "Could not load libtorchcodec"
_TORCHCODEC_END = "[end of libtorchcodec loading traceback]"


class TrainingConsole:
    """What a person reads of a training, out of lerobot-train's hundreds of lines: the loss about ten times over the
    run, each checkpoint saved, and every warning or error. The config dump, per-step lines and torchcodec's report
    of FFmpeg libraries it could not load (one line instead) stay in the log file (and the config in the
    materialization's `train_config`)."""

    def __init__(self, emit: LineCallback, parser: MetricsParser, total_steps: int, reports: int = 10) -> None:
        self.emit, self.parser, self.total = emit, parser, max(1, total_steps)
        self.every = max(1, self.total // reports)
        self.torchcodec_lines_left = 0  # inside torchcodec's report: lines still to swallow (bounded, in case its end
        # marker changes: a real error after it must still show)

    def __call__(self, line: str, parsed: bool) -> None:
        if self.torchcodec_lines_left:
            self.torchcodec_lines_left = 0 if _TORCHCODEC_END in line else self.torchcodec_lines_left - 1
        elif _TORCHCODEC_START in line:
            self.torchcodec_lines_left = 200
            self.emit("torchcodec found no FFmpeg library it can load; videos are decoded with pyav (details in the "
                      "log)")
        elif parsed:
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
            console: Callable[[str, bool], None], start_step: int = 0) -> None:
    """Run `cmd` with its output appended to the log file, and follow the file: each line goes to the metrics
    parser and `console`; raise on failure.

    The trainer writes the log itself rather than through a pipe to this process, so a run worker killed
    mid-training (or slow to read) loses none of the steps the trainer logged: the attempt that resumes it reads
    them back for its health checks. The trainer dies with the process that started it (Linux), so a killed worker
    never leaves a trainer writing into the run dir its retry resumes.
    """
    tail: deque[str] = deque(maxlen=20)
    missing_model = False

    def follow(chunk: bytes) -> None:
        nonlocal missing_model
        for line in _without_progress_bar(chunk.decode("utf-8", errors="replace")):
            tail.append(line)
            missing_model = missing_model or _MISSING_MODEL_RE.search(line) is not None
            console(line, parser.feed(line))

    attempt = 1 + sum(1 for line in _log_lines(log_path) if line.startswith("$ "))
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(ATTEMPT_HEADER.format(number=attempt, start=start_step) + "\n")
        log_file.write(f"$ {shlex.join(cmd)}\n")
    with open(log_path, "ab") as out, open(log_path, "rb") as reader:
        reader.seek(0, os.SEEK_END)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent,
                                preexec_fn=_die_with_parent if _LIBC is not None else None)
        try:
            pending = b""
            while True:
                running = proc.poll() is None
                chunk = reader.read()
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        follow(line)
                elif not running:
                    break
                else:
                    time.sleep(FOLLOW_S)
            if pending:
                follow(pending)
            rc = proc.wait()
        finally:
            stop_process(proc, 30)  # interrupted (run cancelled, KeyboardInterrupt): never leave a trainer behind
    if rc != 0:
        raise TrainingFailed(failure_message(rc, log_path, list(tail), missing_model))


FOLLOW_S = 0.2  # how often the log is read for new lines while the trainer runs


def _log_lines(log_path: Path) -> list[str]:
    """The log's lines without tqdm's progress bar (the trainer writes both into the file)."""
    if not log_path.is_file():
        return []
    return [line for raw in log_path.read_text(errors="replace").split("\n") for line in _without_progress_bar(raw)]


# Lines that mean lerobot-train could not find a base model or a backbone (offline cache empty, wrong name).
_MISSING_MODEL_RE = re.compile(
    r"RepositoryNotFoundError|Repository Not Found|LocalEntryNotFoundError|GatedRepoError|offline mode is enabled"
    r"|couldn't connect to 'https://huggingface\.co'|does not appear to have a file named|is not a local folder and "
    r"is not a valid model identifier", re.IGNORECASE)
_SIGNAL_ADVICE = {
    "SIGKILL": "most often the kernel's out-of-memory killer (see `dmesg` or `journalctl -k`): lower batch_size, "
               "or train on a node with more memory",
    "SIGTERM": "stopped from outside (the run was cancelled, or its node is shutting down)",
    "SIGSEGV": "a crash in native code (a CUDA or video-decoding library)",
}


def failure_message(rc: int, log_path: Path, tail: list[str], missing_model: bool) -> str:
    """What a person reads when lerobot-train fails: how it ended (a signal by name), where the log is, its last
    lines, and advice only where the log supports it."""
    if rc < 0 or rc in (128 + 9, 128 + 15):  # killed directly, or through a shell / launcher (128 + signal)
        number = -rc if rc < 0 else rc - 128
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"
        how = f"lerobot-train was killed by {name}" + (f": {_SIGNAL_ADVICE[name]}" if name in _SIGNAL_ADVICE else "")
    else:
        how = f"lerobot-train exited with code {rc}"
    last = "\n".join(tail)
    message = f"{how}; full log: {log_path}\nlast lines:\n{last}"
    if missing_model:
        message += ("\nIt could not find a base model: download it into the pipeline's HF cache (HF_HUB_OFFLINE=0 "
                    "once) or use an offline preset such as tiny_smolvla.")
    return message


# prctl(PR_SET_PDEATHSIG) from libc, where there is one (Linux); loaded before any fork.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the trainer between fork and exec: the kernel sends it SIGKILL when the process that started it dies."""
    assert _LIBC is not None
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
