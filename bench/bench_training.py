"""Training benchmark (issue 6): what does running `lerobot-train` through the pipeline cost in samples/s?

Same synthetic split, same preset (tiny_smolvla unless --preset), same steps and batch size, three ways:
1. bare `lerobot-train` with the preset's exact argv (subprocess, output to /dev/null-like pipe): the baseline;
2. through the `trained_policy` asset, training part: the runner's subprocess wall time as recorded in the asset's
   `train_wall_s` metadata, i.e. lerobot-train plus line streaming into Dagster logs and metrics parsing;
3. through the asset end to end: `dg.materialize` wall time, adding Dagster start-up, the health checks (one
   sampled batch) and metadata/plots.
Samples/s = steps x batch size / wall seconds, start-up included in all three. Target: (2) within 5% of (1),
which on a quiet machine is what the CPU accounting below predicts.
Runs alternate bare/asset `--repeats` times and the fastest of each is reported, because on a shared CPU the
noise only ever adds time. CPU seconds (getrusage) are printed too: they barely move with other users' load, so
"trainer CPU" shows whether the wrapper slows lerobot-train itself, and "pipeline CPU" what Dagster, streaming,
health checks and plots add on top.

Run: .venv/bin/python bench/bench_training.py [--steps 100] [--batch-size 8] [--device cpu] [--repeats 1]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg

from tatbot_pipeline.config import apply_offline_defaults
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.training import trained_policy
from tatbot_pipeline.synth import SynthSpec, make_recordings
from tatbot_pipeline.training.presets import TrainOptions, get_preset, train_argv
from tatbot_pipeline.training.runner import lerobot_train_command, training_env
from tatbot_pipeline.training.tiny import ensure_tiny_smolvlm, episode_length, tiny_smolvlm_dir

apply_offline_defaults()  # before anything imports lerobot


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def bare(split: Path, home: Path, preset: str, opts: TrainOptions, tag: str) -> tuple[float, float]:
    """(wall s, trainer CPU s)."""
    out = home / "bare" / tag
    argv = train_argv(preset, split, out, episode_length(split), opts, tiny_backbone=tiny_smolvlm_dir(home))
    start, cpu = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN)
    subprocess.run(lerobot_train_command() + argv, env=training_env(home / "hf"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, _cpu(resource.RUSAGE_CHILDREN) - cpu


def through_asset(home: Path, preset: str, opts: TrainOptions) -> tuple[float, float, float, float]:
    """(training wall s, end-to-end wall s, trainer CPU s, in-process pipeline CPU s)."""
    config = {"preset": preset, "steps": opts.steps, "batch_size": opts.batch_size, "device": opts.device or "",
              "log_freq": opts.log_freq, "save_freq": opts.save_freq}
    start, child, me = time.perf_counter(), _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF)
    result = dg.materialize(
        [trained_policy],
        resources={"pipeline": PipelineResource(recordings_dir=str(home / "recordings"), home=str(home))},
        run_config={"ops": {"trained_policy": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    end_to_end = time.perf_counter() - start
    child, me = _cpu(resource.RUSAGE_CHILDREN) - child, _cpu(resource.RUSAGE_SELF) - me
    md = result.asset_materializations_for_node("trained_policy")[0].metadata
    return md["train_wall_s"].value, end_to_end, child, me


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny_smolvla")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=8)
    args = ap.parse_args()
    # Log every 10 steps as a real run would (every step would measure log volume, not training).
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, device=args.device,
                        log_freq=max(1, args.steps // 10), save_freq=args.steps)
    samples = args.steps * args.batch_size

    with tempfile.TemporaryDirectory(prefix="bench_training-") as tmp:
        home = Path(tmp) / "home"
        rec = make_recordings(Path(tmp) / "rec", SynthSpec(episodes=args.episodes, stroke_length=16, cameras=True,
                                                            image_shape=(96, 128), seed=3))[0]
        split = home / "splits" / "v1" / "train"
        shutil.copytree(rec, split)
        (home / "splits" / "latest").symlink_to("v1", target_is_directory=True)
        if get_preset(args.preset).tiny_backbone:
            ensure_tiny_smolvlm(tiny_smolvlm_dir(home))

        bare_runs, asset_runs = [], []
        for i in range(args.repeats):
            bare_runs.append(bare(split, home, args.preset, opts, f"r{i}"))
            asset_runs.append(through_asset(home, args.preset, opts))
            print(f"repeat {i}: bare {bare_runs[-1][0]:.1f} s, asset training {asset_runs[-1][0]:.1f} s, "
                  f"asset end-to-end {asset_runs[-1][1]:.1f} s")

    b, bare_cpu = min(r[0] for r in bare_runs), statistics.median(r[1] for r in bare_runs)
    t, e = min(r[0] for r in asset_runs), min(r[1] for r in asset_runs)
    trainer_cpu = statistics.median(r[2] for r in asset_runs)
    pipeline_cpu = statistics.median(r[3] for r in asset_runs)
    print(f"\n{args.preset}: {args.steps} steps x batch {args.batch_size} = {samples} samples on {args.device}")
    print(f"bare lerobot-train             {samples / b:8.1f} samples/s  ({b:.1f} s)")
    print(f"asset, training subprocess     {samples / t:8.1f} samples/s  ({t:.1f} s)  overhead {t / b - 1:+.1%}"
          f"  (target <= +5%)")
    print(f"asset, end to end (+ checks)   {samples / e:8.1f} samples/s  ({e:.1f} s)  overhead {e / b - 1:+.1%}")
    print(f"CPU: bare trainer {bare_cpu:.1f} s; via asset trainer {trainer_cpu:.1f} s ({trainer_cpu / bare_cpu - 1:+.1%}, "
          "same argv: any difference is machine noise)")
    print(f"added by the pipeline in-process (Dagster + streaming + health checks + plots): {pipeline_cpu:.1f} CPU s = "
          f"{pipeline_cpu / bare_cpu:.1%} of the bare trainer's CPU  (target <= 5%)")


if __name__ == "__main__":
    main()
