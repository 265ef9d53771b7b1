"""What the terminal shows while the pipeline runs from the CLI: a line per step and progress bars, nothing else.

The libraries underneath are loud: SVT-AV1 prints a banner for every video it encodes, FFmpeg's muxer logs its
passes, LeRobot prints model-loading notes, torchvision warns about deprecations. `quiet_console` silences the
encoders at their source (SVT-AV1's own `SVT_LOG` level, libav's log level) and sends everything else a library
writes — prints, logging records, Python warnings — to a log file under the pipeline home, whose path the command
prints at the end. Warnings from this project's own loggers stay on the terminal: those are for the user to act on.
Long work reports structured progress on the `tatbot_pipeline.progress` logger (`task`, `done`, `total`, extras);
the console draws one bar per task from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

PROGRESS_LOGGER = "tatbot_pipeline.progress"


def silence_encoders() -> None:
    """SVT-AV1 and libav print only errors. SVT_LOG is read when an encoder starts (also in child processes)."""
    os.environ["SVT_LOG"] = "1"
    try:
        import av.logging

        av.logging.set_level(av.logging.ERROR)  # PyAV's own callback (LeRobot switches it on and off per video)
        av.logging.set_libav_level(av.logging.ERROR)  # FFmpeg's default callback (the muxer's "second pass" lines)
    except ImportError:  # pragma: no cover - PyAV comes with lerobot
        pass


class ProgressBars(logging.Handler):
    """Draws a tqdm bar per `task` from records of the progress logger (`extra={"task", "done", "total", ...}`)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.bars: dict[str, object] = {}

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        task, done, total = getattr(record, "task", None), getattr(record, "done", None), getattr(record, "total", None)
        if task is None or done is None or not total:
            return
        bar = self.bars.get(task)
        if bar is None or bar.total != total:
            bar = self.bars[task] = tqdm(total=total, desc=f"    {task}", file=self.stream, leave=False,
                                         dynamic_ncols=True, mininterval=0.2, disable=None,  # None: off when not a TTY
                                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                    "[{elapsed}]{postfix}")
        bar.n = min(int(done), int(total))
        note = getattr(record, "note", None)
        if note:
            bar.set_postfix_str(str(note), refresh=False)
        bar.refresh()

    def close_all(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


class Console:
    """The terminal, while library output goes to the log file."""

    def __init__(self, stream: TextIO, log_path: Path, bars: ProgressBars) -> None:
        self.stream, self.log_path, self.bars = stream, log_path, bars

    def line(self, text: str = "") -> None:
        self.bars.close_all()
        print(text, file=self.stream, flush=True)


@contextlib.contextmanager
def quiet_console(log_path: Path) -> Iterator[Console]:
    """Everything libraries write goes to `log_path`; the yielded Console writes to the terminal."""
    silence_encoders()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    with open(log_path, "a", encoding="utf-8", buffering=1) as log_file:
        file_handler = logging.StreamHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        bars = ProgressBars(sys.stderr)
        ours = logging.StreamHandler(terminal)
        ours.setLevel(logging.WARNING)
        ours.setFormatter(logging.Formatter("    %(levelname)s: %(message)s"))
        root, project, progress = logging.getLogger(), logging.getLogger("tatbot_pipeline"), logging.getLogger(PROGRESS_LOGGER)
        saved_level, saved_handlers = root.level, list(root.handlers)
        root.handlers[:] = [file_handler]
        root.setLevel(logging.INFO)
        project.addHandler(ours)
        progress.addHandler(bars)
        progress.propagate = False  # bars on the terminal; the step lines of long work are in the Dagster run
        logging.captureWarnings(True)
        with warnings.catch_warnings(), contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
            warnings.simplefilter("default")
            try:
                yield Console(terminal, log_path, bars)
            finally:
                bars.close_all()
                logging.captureWarnings(False)
                progress.removeHandler(bars)
                progress.propagate = True
                project.removeHandler(ours)
                root.handlers[:] = saved_handlers
                root.setLevel(saved_level)


def report_progress(task: str, done: float, total: float, note: str = "") -> None:
    """Structured progress for whoever draws it (the CLI's bars); a no-op without a listener."""
    logging.getLogger(PROGRESS_LOGGER).info("%s %s/%s", task, done, total,
                                            extra={"task": task, "done": done, "total": total, "note": note})
