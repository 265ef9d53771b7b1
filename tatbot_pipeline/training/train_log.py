"""Training metrics parsed from `lerobot-train`'s log lines.

LeRobot (0.4.4 to 0.6.1) logs one line per `log_freq` steps, e.g.
`INFO ... lerobot_train.py:435 step:2 smpl:8 ep:1 epch:0.25 loss:1.713 grdn:1.848 lr:9.9e-05 updt_s:0.531 data_s:0.057`.
The log is the only channel that exists with wandb off, so the health checks and the loss curve read it.
`step` and `smpl` are printed rounded (`format_big_number`: 1500 -> "2K"), so a rounded step is replaced by the
previous step + log_freq when that agrees with the rounding.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_FIELD_RE = re.compile(r"(\w+):(\S+)")
_WANDB_RE = re.compile(r"Track this run --> (https?://\S+)")  # offline runs print "None"
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
# LeRobot's short names -> ours.
_NAMES = {"loss": "loss", "grdn": "grad_norm", "lr": "lr", "updt_s": "update_s", "data_s": "data_s"}


@dataclass
class MetricsSeries:
    """One row per logged training step, as parallel lists (JSON-friendly, plot-friendly)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    update_s: list[float] = field(default_factory=list)
    data_s: list[float] = field(default_factory=list)
    wandb_url: str | None = None

    def __len__(self) -> int:
        return len(self.step)

    @property
    def final_loss(self) -> float | None:
        return self.loss[-1] if self.loss else None

    def truncate_after(self, step: int) -> None:
        """Drop rows after `step`: a resumed run recomputes the steps after its checkpoint."""
        keep = sum(1 for s in self.step if s <= step)
        for name in ("step", "loss", "grad_norm", "lr", "update_s", "data_s"):
            del getattr(self, name)[keep:]

    def extend(self, other: "MetricsSeries") -> None:
        """Append a resumed run's rows, dropping any step already recorded."""
        last = self.step[-1] if self.step else -1
        for i, s in enumerate(other.step):
            if s > last:
                for name in ("step", "loss", "grad_norm", "lr", "update_s", "data_s"):
                    getattr(self, name).append(getattr(other, name)[i])
        self.wandb_url = other.wandb_url or self.wandb_url

    def to_json(self) -> str:
        # NaN/inf are kept as strings so the file stays valid JSON and a broken run stays visibly broken.
        data = {k: ([_encode(x) for x in v] if isinstance(v, list) else v) for k, v in asdict(self).items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "MetricsSeries":
        data = json.loads(text)
        lists = {k: [float(x) if k != "step" else int(x) for x in v] for k, v in data.items() if isinstance(v, list)}
        return cls(**lists, wandb_url=data.get("wandb_url"))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> "MetricsSeries":
        return cls.from_json(Path(path).read_text())


def _encode(x: float | int) -> float | int | str:
    return str(x) if isinstance(x, float) and not math.isfinite(x) else x


class MetricsParser:
    """Feed it log lines one at a time (as they stream); it accumulates a MetricsSeries."""

    def __init__(self, log_freq: int = 1, start_step: int = 0) -> None:
        self.log_freq = max(1, log_freq)
        self.series = MetricsSeries()
        self._last_step = start_step

    def feed(self, line: str) -> bool:
        """Parse one line; True when it was a metrics line."""
        line = _ANSI_RE.sub("", line)
        if (m := _WANDB_RE.search(line)) is not None:
            self.series.wandb_url = m.group(1)
            return False
        if " step:" not in line or " loss:" not in line:
            return False
        fields = dict(_FIELD_RE.findall(line[line.index(" step:"):]))
        step = self._step(fields["step"])
        self._last_step = step
        self.series.step.append(step)
        for short, name in _NAMES.items():
            getattr(self.series, name).append(_float(fields.get(short)))
        return True

    def _step(self, token: str) -> int:
        if token.isdigit():
            return int(token)
        expected = self._last_step + self.log_freq
        value = float(token[:-1]) * _SUFFIX.get(token[-1], 1)
        return expected if round(expected / _SUFFIX[token[-1]]) == float(token[:-1]) else int(value)


def _float(token: str | None) -> float:
    if token is None:
        return math.nan
    try:
        return float(token)
    except ValueError:
        return math.nan


def parse_log(lines, log_freq: int = 1, start_step: int = 0) -> MetricsSeries:
    """Whole-log convenience over MetricsParser."""
    parser = MetricsParser(log_freq, start_step)
    for line in lines:
        parser.feed(line)
    return parser.series


# Written into a run's log before each lerobot-train it starts, so the log alone tells the attempts apart.
ATTEMPT_HEADER = "# tatbot_pipeline attempt {number}: lerobot-train from step {start}"
_ATTEMPT_RE = re.compile(r"^# tatbot_pipeline attempt (\d+): lerobot-train from step (\d+)")


@dataclass
class Attempts:
    """A run's metrics over every lerobot-train it took: a killed attempt's steps up to the checkpoint the next one
    resumed from are kept, the steps it redid are the next attempt's."""

    series: MetricsSeries
    count: int  # lerobot-train processes started (0: none logged)
    first_start: int  # the step the first logged attempt started from

    @property
    def steps(self) -> int:
        return self.series.step[-1] if self.series.step else 0


def parse_attempts(lines, log_freq: int = 1) -> Attempts:
    """Every attempt of a run log, merged. Lines before the first header (logs of older versions) count as one
    attempt from step 0."""
    series, count, first_start = MetricsSeries(), 0, None
    parser: MetricsParser | None = None

    def close() -> None:
        if parser is not None:
            series.extend(parser.series)

    for line in lines:
        if (m := _ATTEMPT_RE.match(line)) is not None:
            close()
            start = int(m.group(2))
            series.truncate_after(start)
            parser, count = MetricsParser(log_freq, start), count + 1
            first_start = start if first_start is None else first_start
        else:
            if parser is None:
                parser, count, first_start = MetricsParser(log_freq), 1, 0
            parser.feed(line)
    close()
    return Attempts(series, count, first_start or 0)
