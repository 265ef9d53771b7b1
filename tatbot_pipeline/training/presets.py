"""Policy presets: each one turns (split, run dir, options) into the exact `lerobot-train` command line.

A registry rather than an if-chain, the way LeRobot registers policy configs: adding a family is one
`register(Preset(...))`. Every preset follows DESIGN §4: `n_obs_steps=1`, `chunk_size = n_action_steps =` the
split's stroke length unless overridden, no push to the Hub, outputs in the run dir, and the cosine schedule's
warmup/decay set explicitly so that LeRobot's auto-rescaling to `--steps` cannot change it between a run and its
resume.

pi0 has no tiny variant: LeRobot (0.4.4 to 0.6.1) hard-codes its PaliGemma sizes (`gemma_2b` + `gemma_300m`, ~3 B params),
needs a patched transformers build and loads its tokenizer (`google/paligemma-3b-pt-224`) from the Hub, so nothing
of it can be built offline. Its preset is checked by its command line and by `validate_argv`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tatbot_pipeline.checkpoints import last_checkpoint
from tatbot_pipeline.training.tiny import TINY_IMAGE_SIZE, TINY_VLM_LAYERS


@dataclass(frozen=True)
class TrainOptions:
    """Knobs a user may change per run; `None` means "the preset's default"."""

    steps: int | None = None
    batch_size: int | None = None
    chunk_size: int | None = None  # default: the split's stroke length
    device: str | None = None
    log_freq: int | None = None
    save_freq: int | None = None
    num_workers: int | None = None
    seed: int = 1000
    wandb_project: str | None = None  # None: wandb off
    wandb_mode: str = "offline"  # "online" only when the user has configured wandb credentials
    extra_args: tuple[str, ...] = ()  # appended verbatim, e.g. ("--policy.optimizer_lr=5e-5",)
    num_gpus: int | None = None  # >1: one process per GPU through `accelerate launch` (batch_size is per GPU)


@dataclass(frozen=True)
class Preset:
    """One way to train a policy family. `policy_args(chunk, options, tiny_backbone)` gives its `--policy.*` flags."""

    name: str
    policy_type: str
    description: str
    defaults: TrainOptions
    policy_args: Callable[[int, TrainOptions, Path | None], list[str]]
    base_model: str | None = None  # the Hub checkpoint it fine-tunes (`--policy.path`), None: from scratch
    offline: bool = False  # True when it runs without any download (tests, demo)
    tiny_backbone: bool = False  # needs `ensure_tiny_smolvlm` first

    def options(self, overrides: TrainOptions | None = None) -> TrainOptions:
        """The preset's defaults with every non-None override applied."""
        if overrides is None:
            return self.defaults
        changed = {k: v for k, v in vars(overrides).items() if v is not None and v != getattr(TrainOptions(), k)}
        return replace(self.defaults, **changed)


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} registered twice")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _schedule_args(steps: int) -> list[str]:
    warmup = min(1000, max(1, steps // 10))
    return [f"--policy.scheduler_warmup_steps={warmup}", f"--policy.scheduler_decay_steps={steps}"]


def _chunk_args(chunk: int) -> list[str]:
    return ["--policy.n_obs_steps=1", f"--policy.chunk_size={chunk}", f"--policy.n_action_steps={chunk}"]


def _smolvla_args(chunk: int, opts: TrainOptions, _backbone: Path | None = None) -> list[str]:
    return [
        "--policy.path=lerobot/smolvla_base",
        *_chunk_args(chunk),
        "--policy.resize_imgs_with_padding=[512,512]",
        *_schedule_args(opts.steps),
    ]


def _pi0_args(chunk: int, opts: TrainOptions, _backbone: Path | None = None) -> list[str]:
    return ["--policy.path=lerobot/pi0_base", *_chunk_args(chunk), *_schedule_args(opts.steps)]


def _tiny_smolvla_args(chunk: int, opts: TrainOptions, backbone: Path | None = None) -> list[str]:
    if backbone is None:
        raise ValueError("tiny_smolvla needs the tiny backbone dir: call train_argv(..., tiny_backbone=<dir>)")
    size = TINY_IMAGE_SIZE
    return [
        "--policy.type=smolvla",
        f"--policy.vlm_model_name={backbone}",
        "--policy.load_vlm_weights=false",
        f"--policy.num_vlm_layers={TINY_VLM_LAYERS}",
        *_chunk_args(chunk),
        f"--policy.resize_imgs_with_padding=[{size},{size}]",
        # A random-init model learns visibly within 20 steps only with a larger step than SmolVLA's 1e-4.
        "--policy.optimizer_lr=1e-3",
        *_schedule_args(opts.steps),
    ]


register(Preset(
    name="smolvla",
    policy_type="smolvla",
    description="Fine-tune SmolVLA from lerobot/smolvla_base (GPU; downloads the base on first use).",
    base_model="lerobot/smolvla_base",
    defaults=TrainOptions(steps=20_000, batch_size=64, log_freq=100, save_freq=5_000, num_workers=4),
    policy_args=_smolvla_args,
))
register(Preset(
    name="pi0",
    policy_type="pi0",
    description="Fine-tune pi0 from lerobot/pi0_base (large GPU; needs LeRobot's patched transformers).",
    base_model="lerobot/pi0_base",
    defaults=TrainOptions(steps=30_000, batch_size=32, log_freq=100, save_freq=5_000, num_workers=4),
    policy_args=_pi0_args,
))
register(Preset(
    name="tiny_smolvla",
    policy_type="smolvla",
    description="Randomly initialised 0.4 M-parameter SmolVLA on a local tiny backbone: CPU, seconds, no download.",
    defaults=TrainOptions(steps=20, batch_size=4, device="cpu", log_freq=1, save_freq=10, num_workers=0),
    policy_args=_tiny_smolvla_args,
    offline=True,
    tiny_backbone=True,
))


def train_argv(
    preset: str | Preset,
    dataset_root: Path,
    output_dir: Path,
    chunk_size: int,
    options: TrainOptions | None = None,
    tiny_backbone: Path | None = None,
) -> list[str]:
    """Arguments of a fresh `lerobot-train` run (without the program name). `chunk_size` is the stroke length."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    opts = p.options(options)
    chunk = opts.chunk_size or chunk_size
    dataset_root = Path(dataset_root).absolute()
    return [
        f"--dataset.repo_id=local/{dataset_root.name}",
        f"--dataset.root={dataset_root}",
        "--dataset.video_backend=pyav",
        *p.policy_args(chunk, opts, tiny_backbone),
        "--policy.push_to_hub=false",
        *([f"--policy.device={opts.device}"] if opts.device else []),
        f"--output_dir={Path(output_dir).absolute()}",
        f"--job_name={Path(output_dir).name}",
        f"--steps={opts.steps}",
        f"--batch_size={opts.batch_size}",
        f"--log_freq={opts.log_freq}",
        f"--save_freq={opts.save_freq}",
        f"--num_workers={opts.num_workers}",
        f"--seed={opts.seed}",
        *_wandb_args(opts),
        *opts.extra_args,
    ]


def resume_argv(run_dir: Path, steps: int, log_freq: int | None = None) -> list[str]:
    """Arguments that continue `run_dir` from its last checkpoint up to `steps` in total (DESIGN §4)."""
    config = last_checkpoint(Path(run_dir).absolute()) / "train_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no checkpoint to resume from — start a fresh run instead")
    args = [f"--config_path={config}", "--resume=true", f"--steps={steps}"]
    if log_freq:
        args.append(f"--log_freq={log_freq}")
    return args


def _wandb_args(opts: TrainOptions) -> list[str]:
    if not opts.wandb_project:
        return ["--wandb.enable=false"]
    return ["--wandb.enable=true", f"--wandb.project={opts.wandb_project}", f"--wandb.mode={opts.wandb_mode}"]


def validate_argv(argv: list[str], policy_type: str | None = None):
    """Parse `argv` into LeRobot's `TrainPipelineConfig` and run its validation, without loading any weights.

    A `--policy.path=<hub id>` cannot be resolved offline, so it is replaced by `--policy.type=<policy_type>`: every
    other flag, including the `--policy.*` overrides, is then checked against the real config classes (unknown
    fields, bad values, `n_action_steps > chunk_size`, ...). Raises on an invalid command; returns the config.
    """
    import draccus
    from lerobot.configs.train import TrainPipelineConfig
    import lerobot.policies  # noqa: F401 - registers every policy config class with draccus

    args = []
    for arg in argv:
        if arg.startswith("--policy.path="):
            if not policy_type:
                raise ValueError("validate_argv: argv has --policy.path; pass policy_type to check it offline")
            args.append(f"--policy.type={policy_type}")
        else:
            args.append(arg)
    try:
        cfg = draccus.parse(config_class=TrainPipelineConfig, args=args, exit_on_error=False)
        # `validate()` re-reads sys.argv for `--policy.path`; show it the offline-equivalent command.
        with _argv(["lerobot-train", *args]):
            cfg.validate()
    except Exception as exc:  # draccus/argparse/LeRobot each raise their own types; the user needs the root cause
        raise InvalidTrainCommand(f"lerobot-train would reject this command: {_root_cause(exc)}") from exc
    return cfg


class InvalidTrainCommand(ValueError):
    """A preset's command line that LeRobot's config classes refuse."""


def _root_cause(exc: BaseException) -> str:
    messages = []
    while exc is not None:
        messages.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(reversed(messages[-2:])) if len(messages) > 1 else messages[0]


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def launcher_argv(num_gpus: int | None = None) -> list[str]:
    """The program that runs `lerobot-train`'s arguments: itself, or LeRobot's documented multi-GPU path.

    LeRobot trains through Hugging Face Accelerate (docs: multi_gpu_training); with N GPUs it is
    `accelerate launch --multi_gpu --num_processes=N` around the same module, each process taking `--batch_size`.
    """
    n = 1 if num_gpus is None else num_gpus
    if n < 1:
        raise ValueError(f"num_gpus={n}: at least one")
    if n == 1:
        return ["lerobot-train"]
    return ["accelerate", "launch", "--multi_gpu", f"--num_processes={n}", "-m", "lerobot.scripts.lerobot_train"]


def check_multi_gpu(options: TrainOptions) -> None:
    """Refuse a multi-GPU run on a CPU device before anything starts (accelerate would fail after seconds)."""
    if (options.num_gpus or 1) > 1 and options.device and not options.device.startswith("cuda"):
        raise ValueError(f"num_gpus={options.num_gpus} needs --policy.device=cuda, not {options.device!r}: "
                         "use a GPU preset (smolvla, pi0) or num_gpus=1")


def command_line(argv: list[str], num_gpus: int | None = None) -> str:
    """The shell command a user can paste to run the same training by hand: one flag per line (`\\` continued), so
    it reads, and fits a narrow pane, as well as it pastes."""
    import shlex

    return " \\\n  ".join([shlex.join(launcher_argv(num_gpus)), *(shlex.quote(a) for a in argv)])


__all__ = [
    "PRESETS",
    "InvalidTrainCommand",
    "Preset",
    "TrainOptions",
    "check_multi_gpu",
    "command_line",
    "get_preset",
    "launcher_argv",
    "register",
    "resume_argv",
    "train_argv",
    "validate_argv",
]
