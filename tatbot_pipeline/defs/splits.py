"""`training_splits`: merged train/val LeRobot datasets from every usable recording episode."""

from typing import Literal

import dagster as dg

from tatbot_pipeline.datasets.build import SplitResult, build_splits, excluded_markdown
from tatbot_pipeline.datasets.split import SplitConfig
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.defs.automation import SPLIT_CRON, split_condition
from tatbot_pipeline.defs.resources import PipelineResource


class SplitRunConfig(dg.Config):
    """Run config of `training_splits` (launchpad); see datasets.split.SplitConfig for the meaning of each field."""

    val_fraction: float = 0.2
    salt: str = "tatbot"
    holdout: Literal["episode", "recording", "design"] = "episode"
    group_key: Literal["", "stroke_length", "fps", "features", "signature"] = ""
    group_value: str = ""
    min_val_episodes: int = 1

    def to_core(self) -> SplitConfig:
        return SplitConfig(**self.model_dump())


@dg.asset(
    group_name="training",
    owners=OWNERS,
    kinds={"lerobot"},
    deps=[dg.AssetDep("recording_validation")],
    automation_condition=split_condition(),
    description="Train/val LeRobot v3.0 datasets under $TATBOT_PIPELINE_HOME/splits/<version>/{train,val} "
    "(splits/latest -> newest), merged from the usable episodes of every passing/warning recording. Rebuilt by "
    f"itself after new validations (at most once per `{SPLIT_CRON}`, TATBOT_SPLIT_CRON); an unchanged set of "
    "episodes keeps its version, which is its data version.",
)
def training_splits(context: dg.AssetExecutionContext, config: SplitRunConfig,
                    pipeline: PipelineResource) -> dg.MaterializeResult:
    result = build_splits(pipeline.settings, config.to_core())
    context.log.info(f"split {result.version} {'reused' if result.reused else 'built'} at {result.root}")
    return dg.MaterializeResult(metadata=split_metadata(result), data_version=dg.DataVersion(result.version))


def split_metadata(result: SplitResult) -> dict:
    m = result.manifest
    metadata: dict = {
        "version": result.version,
        "reused": result.reused,
        "path": dg.MetadataValue.path(str(result.root)),
        "stroke_length": m["stroke_length"],  # what the training presets align chunk_size to
        "fps": m["fps"],
        "recordings": dg.MetadataValue.json([r["name"] for r in m["recordings"]]),
        "designs": dg.MetadataValue.json(m["designs"]),
        "fingerprints": dg.MetadataValue.json({r["name"]: r["fingerprint"] for r in m["recordings"]}),
        "excluded": dg.MetadataValue.md(excluded_markdown(m)),
        "config": dg.MetadataValue.json(m["config"]),
    }
    for side in ("train", "val"):
        info, path = m["sides"].get(side), result.side_path(side)
        metadata[f"{side}_episodes"] = info["episodes"] if info else 0
        metadata[f"{side}_frames"] = info["frames"] if info else 0
        metadata[f"{side}_path"] = dg.MetadataValue.path(str(path)) if path else "none (no episode on this side)"
    if m["topped_up"]:
        metadata["val_topped_up"] = dg.MetadataValue.json(m["topped_up"])
    return metadata


defs = dg.Definitions(assets=[training_splits])
