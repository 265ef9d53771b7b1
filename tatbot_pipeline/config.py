"""One settings object for paths and knobs; environment overrides live here and nowhere else.

Each TATBOT_* variable comes from the environment when it is set there, else from `.tatbot.env` in the current
directory (the settings `tatbot-pipeline demo` saves for a later `dagster dev` there), else from the default below:
an exported variable always wins. Not `.env`: every `dagster` command loads that over the environment.
"""

from __future__ import annotations

import math
import os
import pwd
from dataclasses import dataclass, field, fields
from pathlib import Path


DEFAULT_RECORDINGS_DIR = Path("/nfs/tatbot/recordings")
# Saved settings, read from the working directory below the environment (module docstring). Dagster's CLI loads
# only a file named exactly `.env` (dagster/_core/secrets/env_file.py), so it leaves this one to us.
SETTINGS_FILE = ".tatbot.env"


def settings_file(directory: Path | None = None) -> Path:
    """Where saved settings are read from: `.tatbot.env` in `directory`, by default the working directory (where
    `dagster dev`, its code servers and run workers, and the demo all run)."""
    return (Path.cwd() if directory is None else Path(directory)) / SETTINGS_FILE


def saved_settings(directory: Path | None = None) -> dict[str, str]:
    """The TATBOT_* values saved in `settings_file(directory)` ({} when there is none): defaults, below the
    environment. Other names in the file are ignored; it is not a way to set arbitrary environment variables."""
    path = settings_file(directory)
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # dagster's dependency; only read when a file is there

    return {k: v for k, v in dotenv_values(path).items() if k.startswith("TATBOT_") and v is not None}


def default_home() -> Path:
    """`<repo>/.tatbot` when the package runs from its source checkout (what `source .venv/bin/activate` exports too),
    else `~/.tatbot`: never the current directory, so a command run from anywhere finds the same home."""
    repo = Path(__file__).resolve().parents[1]
    return (repo if (repo / "pyproject.toml").is_file() else Path.home()) / ".tatbot"


def default_state_dir() -> Path:
    """Robot locks and arming are per node, not per pipeline home: every process on the node must see the same
    files, and nobody but the robot's user may write them (robot/state_dir.py checks). `~/.local/state/tatbot-robot`
    of the user running this process, from the password database, not $HOME, so a server, a cron job and an
    operator's shell of the same user always share one lock."""
    return Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".local" / "state" / "tatbot-robot"

# Where the tatbot backend's camera frames come from: the RealSense cameras the scene lists, or the project's
# renderer (`robot/render.py: render_camera`) for arm-only hardware-in-the-loop runs with no camera attached.
CAMERA_SOURCES = ("realsense", "sim")
# At most one split rebuild per tick, never while recordings are being ingested (defs/automation.py says why).
DEFAULT_SPLIT_CRON = "*/2 * * * *"
# Nightly; retraining only happens at a tick after the split's version changed.
DEFAULT_RETRAIN_CRON = "0 2 * * *"
DEFAULT_ROBOT_NODE = "hog"
# A missing local model or dataset must fail loudly instead of silently reaching for the Hub, and wandb stays local
# unless a lab syncs on purpose. huggingface_hub reads these when it is imported, so the entry points (cli.main, the
# code location's loader) apply them before anything imports lerobot.
OFFLINE_DEFAULTS = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "WANDB_MODE": "offline"}


def apply_offline_defaults(environ=os.environ) -> None:
    """Offline unless the user set these variables themselves."""
    for key, value in OFFLINE_DEFAULTS.items():
        environ.setdefault(key, value)


@dataclass(frozen=True)
class RolloutLimits:
    """Server-side bounds on one rollout, whatever its caller asks for (env: TATBOT_ROLLOUT_<FIELD>, e.g.
    TATBOT_ROLLOUT_MAX_SECONDS=300). A rollout that reaches one stops, parks, and is reported as stopped."""

    max_seconds: float = 600.0  # wall-clock cap of the control loop
    max_steps: int = 6000  # step cap (10 min at 10 Hz), above any max_steps a caller sends
    max_adjusted_steps: int = 20  # consecutive steps whose action the envelope had to change by > adjust_tolerance_rad
    adjust_tolerance_rad: float = 0.02  # a smaller correction (a gripper a hair past its limit) does not count
    max_tracking_error_rad: float = 0.35  # previous command vs observed position, any revolute joint
    start_tolerance_rad: float = 0.02  # the loop starts only with every revolute joint this close to its start pose
    start_timeout_s: float = 20.0  # how long past the move's goal time the arms may take to get there
    # Before a long move (park, ready, a stroke's approach) each arm is held and must come to rest: every revolute
    # joint slower than rest_velocity_rad_s within rest_timeout_s, else that arm holds where it is and is reported.
    rest_velocity_rad_s: float = 0.05
    rest_timeout_s: float = 10.0
    cancel_timeout_s: float = 10.0  # how long a stop (park included) may take before the rollout is abandoned
    client_timeout_s: float = 2.0  # a client that does not answer a ping within this is gone

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"rollout limit {f.name}={value!r} must be a positive number")

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> "RolloutLimits":
        """From `field -> text` (the environment's form); unknown fields are an error, not ignored."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown rollout limits {unknown}; known: {sorted(known)}")
        parsed = {}
        for name, text in values.items():
            try:
                parsed[name] = int(text) if known[name] in (int, "int") else float(text)
            except ValueError:
                raise ValueError(f"rollout limit {name}={text!r} is not a number") from None
        return cls(**parsed)


@dataclass(frozen=True)
class PipelineSettings:
    """Where recordings are read from and where everything the pipeline makes is written.

    The recordings root is read-only to the pipeline; all outputs go under `home`.
    """

    recordings_dir: Path = DEFAULT_RECORDINGS_DIR
    home: Path = field(default_factory=default_home)
    # A recording whose files changed less than this long ago may still be written by stroke_tool.
    settle_seconds: float = 60.0
    # Robot lock files and the arming file, shared by every process on the robot node.
    robot_state_dir: Path = field(default_factory=default_state_dir)
    # Named scenes for rollouts (<name>.yaml); None: <home>/scenes.
    scenes: Path | None = None
    rollout_limits: RolloutLimits = field(default_factory=RolloutLimits)
    # TATBOT_CAMERA_SOURCE: realsense (the real cameras) or sim (rendered frames, same names and shapes).
    camera_source: str = "realsense"
    # The robot node's MCP server: its bearer token (TATBOT_MCP_TOKEN, on the node and for the clients that call it),
    # the roots it loads checkpoints from (TATBOT_CHECKPOINT_ROOTS, os.pathsep-separated; empty: the pipeline home)
    # and its robot backend (TATBOT_ROBOT_BACKEND).
    mcp_token: str | None = field(default=None, repr=False)
    checkpoint_roots: tuple[Path, ...] = ()
    robot_backend: str = "sim"
    # The lab's promotion gate for evaluations nobody configures by hand (the daemon's): TATBOT_GATE_MAX_MAE,
    # TATBOT_GATE_MAX_JOINT_MAE (rad), TATBOT_GATE_LATENCY_MS; unset ones keep evaluation/gate.py's defaults.
    gate_overrides: dict[str, float] = field(default_factory=dict)
    # The sim gate (evaluation/sim_gate.py: SimGateLimits) a lab applies to every sim_evaluation: TATBOT_SIM_GATE_
    # TIP_DEVIATION_MM, _MIN_SHARE_WITHIN, _MAX_TIP_ERROR_P95_MM, _MAX_CONTACT_FORCE_N, _MAX_STOPS; and how many
    # held-out strokes it rolls out (TATBOT_SIM_EPISODES, default 8).
    sim_gate_overrides: dict[str, float] = field(default_factory=dict)
    sim_episodes: int = 8
    # Training defaults for runs nobody configures by hand: TATBOT_TRAIN_PRESET, and wandb's mode (WANDB_MODE;
    # offline unless a lab syncs on purpose).
    train_preset: str = "tiny_smolvla"
    wandb_mode: str = "offline"
    # GPUs one training asks for (TATBOT_TRAIN_GPUS); more than one trains through `accelerate launch --multi_gpu`.
    train_gpus: int = 1
    # The loop's crons (TATBOT_SPLIT_CRON, TATBOT_RETRAIN_CRON): defs/automation.py.
    split_cron: str = DEFAULT_SPLIT_CRON
    retrain_cron: str = DEFAULT_RETRAIN_CRON
    # The robot node `robot_eval` drives by default (TATBOT_ROBOT_NODE): its run tag and the launchpad's default.
    robot_node: str = DEFAULT_ROBOT_NODE
    # Where `home` came from: "TATBOT_PIPELINE_HOME", "file:<saved settings>", "default" (config.default_home) or
    # "given" (by the caller).
    home_origin: str = field(default="given", compare=False)

    def __post_init__(self) -> None:
        if self.camera_source not in CAMERA_SOURCES:
            raise ValueError(f"camera source {self.camera_source!r} (TATBOT_CAMERA_SOURCE): choose one of {list(CAMERA_SOURCES)}")
        if self.train_gpus < 1:
            raise ValueError(f"TATBOT_TRAIN_GPUS={self.train_gpus}: a training needs at least one GPU")

    @classmethod
    def from_env(cls, **overrides) -> "PipelineSettings":
        """From the environment, then the working directory's saved settings (settings_file), then the defaults;
        `overrides` (not None or empty) over all three."""
        saved = saved_settings()
        env = {**saved, **os.environ}
        values = {
            "recordings_dir": Path(env.get("TATBOT_RECORDINGS_DIR", DEFAULT_RECORDINGS_DIR)),
            "home": Path(env.get("TATBOT_PIPELINE_HOME") or default_home()).absolute(),
            "home_origin": ("TATBOT_PIPELINE_HOME" if os.environ.get("TATBOT_PIPELINE_HOME")
                            else f"file:{settings_file()}" if env.get("TATBOT_PIPELINE_HOME") else "default"),
            "settle_seconds": float(env.get("TATBOT_SETTLE_SECONDS", 60.0)),
            "robot_state_dir": Path(env.get("TATBOT_ROBOT_STATE_DIR") or default_state_dir()),
            "scenes": Path(env["TATBOT_SCENES_DIR"]) if env.get("TATBOT_SCENES_DIR") else None,
            "rollout_limits": RolloutLimits.from_strings({
                f.name: env[f"TATBOT_ROLLOUT_{f.name.upper()}"] for f in fields(RolloutLimits)
                if env.get(f"TATBOT_ROLLOUT_{f.name.upper()}")
            }),
            "camera_source": env.get("TATBOT_CAMERA_SOURCE") or "realsense",
            "mcp_token": env.get("TATBOT_MCP_TOKEN") or None,
            "checkpoint_roots": tuple(Path(p) for p in env.get("TATBOT_CHECKPOINT_ROOTS", "").split(os.pathsep) if p),
            "robot_backend": env.get("TATBOT_ROBOT_BACKEND") or "sim",
            "gate_overrides": _gate_overrides(env),
            "sim_gate_overrides": _sim_gate_overrides(env),
            "sim_episodes": _whole_number(env, "TATBOT_SIM_EPISODES", 8),
            "train_preset": env.get("TATBOT_TRAIN_PRESET") or "tiny_smolvla",
            "wandb_mode": env.get("WANDB_MODE") or "offline",
            "train_gpus": _whole_number(env, "TATBOT_TRAIN_GPUS", 1),
            "split_cron": env.get("TATBOT_SPLIT_CRON") or DEFAULT_SPLIT_CRON,
            "retrain_cron": env.get("TATBOT_RETRAIN_CRON") or DEFAULT_RETRAIN_CRON,
            "robot_node": env.get("TATBOT_ROBOT_NODE") or DEFAULT_ROBOT_NODE,
        }
        if overrides.get("home"):
            values["home_origin"] = "given"
        values.update({k: v for k, v in overrides.items() if v is not None and v != ""})
        values["recordings_dir"] = Path(values["recordings_dir"])
        values["home"] = Path(values["home"]).absolute()
        return cls(**values)

    def home_note(self) -> str:
        """Which pipeline home a command uses and why, for the user (the CLI prints it)."""
        why = {"TATBOT_PIPELINE_HOME": "from TATBOT_PIPELINE_HOME",
               "default": "TATBOT_PIPELINE_HOME is not set: the default home (source .venv/bin/activate sets it)"}
        if self.home_origin.startswith("file:"):
            return (f"pipeline home: {self.home} (TATBOT_PIPELINE_HOME is not exported: from "
                    f"{self.home_origin.removeprefix('file:')})")
        return f"pipeline home: {self.home} ({why.get(self.home_origin, 'given by the caller')})"

    @property
    def allowed_checkpoint_roots(self) -> tuple[Path, ...]:
        """Where the robot node may load checkpoints from: TATBOT_CHECKPOINT_ROOTS, else the pipeline home."""
        return self.checkpoint_roots or (self.home,)

    @property
    def scenes_dir(self) -> Path:
        """Where rollout scenes live: TATBOT_SCENES_DIR, else <home>/scenes (a recording's scene.yaml, copied as is)."""
        return Path(self.scenes) if self.scenes is not None else self.home / "scenes"

    def sim_dir(self, checkpoint_sha256: str) -> Path:
        """A checkpoint's sim evaluation (rollouts, plots, sim_evaluation.json), by content: one per checkpoint."""
        return self.home / "outputs" / "sim" / checkpoint_sha256[:16]

    def calibration_dir(self, split_version: str) -> Path:
        """The sim calibration of one split version (evaluation/calibration.py): fitted scene, gaps, plot."""
        return self.home / "outputs" / "sim_calibration" / split_version

    def calibrated_scene(self, split_root: Path) -> Path | None:
        """The fitted scene of the split `split_root` (`splits/<version>`, or its train/val side), if calibrated."""
        root = Path(split_root).resolve()
        version = root.parent.name if root.name in ("train", "val") else root.name
        scene = self.calibration_dir(version) / "scene.xml"
        return scene if scene.is_file() else None

    @property
    def eval_datasets_dir(self) -> Path:
        """Rollouts recorded by vla_infer (vla-eval-<scene>-<timestamp>)."""
        return self.home / "eval_datasets"

    @property
    def promoted_path(self) -> Path:
        """The checkpoint the gate promoted last: what robot_eval rolls out by default."""
        return self.home / "promoted.json"

    @property
    def leaderboard_path(self) -> Path:
        """Every evaluated checkpoint with its figures and the gate's decision."""
        return self.eval_dir / "leaderboard.json"

    @property
    def deployed_dir(self) -> Path:
        """Checkpoints deployed to a robot node that shares this filesystem (deploy mode `local`)."""
        return self.home / "deployed"

    @property
    def splits_dir(self) -> Path:
        return self.home / "splits"

    @property
    def train_dir(self) -> Path:
        return self.home / "outputs" / "train"

    @property
    def eval_dir(self) -> Path:
        return self.home / "outputs" / "eval"

    @property
    def validation_dir(self) -> Path:
        """One ValidationReport JSON per recording: what the split reads to pick usable episodes."""
        return self.home / "validation"

    def report_path(self, recording: str) -> Path:
        return self.validation_dir / f"{recording}.json"

    @property
    def logs_dir(self) -> Path:
        """Full logs of CLI runs (the demo): what the terminal leaves out."""
        return self.home / "logs"

    @property
    def intake_dir(self) -> Path:
        """The recordings sensor's seen-map (recordings/intake.py); its cursor only points at a file here."""
        return self.home / "ingestion"

    @property
    def converted_dir(self) -> Path:
        """Recordings converted from older LeRobot formats (never converted in place)."""
        return self.home / "converted"

    @property
    def hf_home(self) -> Path:
        return self.home / "hf"


_GATE_ENV = {"TATBOT_GATE_MAX_MAE": ("max_mae", 1.0), "TATBOT_GATE_MAX_JOINT_MAE": ("max_joint_mae", 1.0),
             "TATBOT_GATE_LATENCY_MS": ("latency_budget_s", 1e-3)}


def _gate_overrides(env) -> dict[str, float]:
    out = {}
    for var, (name, scale) in _GATE_ENV.items():
        if env.get(var):
            try:
                out[name] = float(env[var]) * scale
            except ValueError:
                raise ValueError(f"{var}={env[var]!r} is not a number") from None
    return out


SIM_GATE_FIELDS = ("tip_deviation_mm", "min_share_within", "max_tip_error_p95_mm", "max_contact_force_n", "max_stops")


def _sim_gate_overrides(env) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in SIM_GATE_FIELDS:
        var = f"TATBOT_SIM_GATE_{name.upper()}"
        if env.get(var):
            try:
                out[name] = int(env[var]) if name == "max_stops" else float(env[var])
            except ValueError:
                raise ValueError(f"{var}={env[var]!r} is not a number") from None
    return out


def _whole_number(env, var: str, default: int) -> int:
    value = env.get(var) or str(default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{var}={value!r}: expected a whole number (1, 2, ...)") from None
