"""Training off the Dagster host through Dagster Pipes: the GPU side runs this module, Dagster keeps the records.

`python -m tatbot_pipeline.training.pipes` is the external process: it reads what to train from the Pipes extras
(`pipes_extras`), runs the same `train_policy` + `run_health` as `trained_policy`, streams lerobot-train's lines as
Pipes logs, and reports the materialization and the three health checks back. It imports `dagster_pipes` only, not
dagster. Any Pipes client launches it: `PipesSubprocessClient` on the same machine, `PipesK8sClient` or
`PipesDockerClient` on a GPU node (image deploy/Dockerfile, the pipeline home on the shared mount).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults
from tatbot_pipeline.training.presets import TrainOptions
from tatbot_pipeline.training.report import plain_details, report_training
from tatbot_pipeline.training.runner import train_policy


def pipes_command() -> list[str]:
    """The external process, with this environment's interpreter."""
    return [sys.executable, "-m", "tatbot_pipeline.training.pipes"]


def pipes_extras(preset: str, dataset_root: Path, run_dir: Path, hf_home: Path, options: TrainOptions,
                 models_home: Path | None = None) -> dict:
    """What the external process trains; paths must mean the same on both sides (the shared mount)."""
    return {
        "preset": preset,
        "dataset_root": str(Path(dataset_root).absolute()),
        "run_dir": str(Path(run_dir).absolute()),
        "hf_home": str(Path(hf_home).absolute()),
        "models_home": str(Path(models_home).absolute()) if models_home else None,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()},
    }


def raw(entries: dict) -> dict:
    """Core report entries as Pipes metadata ({"raw_value", "type"})."""
    return {name: {"raw_value": value, "type": kind} for name, (kind, value) in entries.items()}


def main() -> None:
    from dagster_pipes import open_dagster_pipes

    apply_offline_defaults()
    with open_dagster_pipes() as pipes:
        x = pipes.extras
        options = TrainOptions(**{k: tuple(v) if k == "extra_args" else v for k, v in x["options"].items()})
        dataset_root = Path(x["dataset_root"])
        run = train_policy(x["preset"], dataset_root, Path(x["run_dir"]), Path(x["hf_home"]), options,
                           models_home=Path(x["models_home"]) if x["models_home"] else None,
                           on_line=pipes.log.info)
        report = report_training(run, dataset_root, pipes.log.info)
        for h in report.health:
            pipes.report_asset_check(check_name=h.name, passed=h.passed, severity="ERROR",
                                     metadata={"message": h.message, **plain_details(h)})
        pipes.report_asset_materialization(
            metadata={"summary": {"raw_value": report.summary, "type": "text"}, **raw(report.first),
                      **raw(report.last)},
            data_version=f"{run.run_dir.name}@{run.steps}",
        )


if __name__ == "__main__":
    main()
