"""`training_splits`: merged train/val LeRobot datasets from every usable recording episode."""

from typing import Literal

import dagster as dg
from pydantic import Field

from tatbot_pipeline.datasets.build import SplitResult, build_splits, excluded_markdown
from tatbot_pipeline.datasets.selection import GROUP_KEYS
from tatbot_pipeline.datasets.split import Holdout, SplitConfig
from tatbot_pipeline.defs import OWNERS
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.defs.automation import split_condition, with_condition
from tatbot_pipeline.defs.metadata import headline_first, number
from tatbot_pipeline.defs.resources import PipelineResource


_CORE = SplitConfig()


class SplitRunConfig(dg.Config):
    """Run config of training_splits (launchpad); defaults are datasets.split.SplitConfig's."""

    val_fraction: float = Field(_CORE.val_fraction, description="share of units (episodes, recordings or designs) "
                                "held out for validation")
    salt: str = Field(_CORE.salt, description="changes which units land in val; the same salt keeps assignments "
                      "stable as recordings are added")
    holdout: Holdout = Field(_CORE.holdout, description="what a val unit is: "
                                                               "single episodes, whole recordings or whole designs")
    group_key: Literal[("", *GROUP_KEYS)] = Field(  # type: ignore[valid-type]
        _CORE.group_key, description="build from one group of compatible recordings (empty: refuse a mix)")
    group_value: str = Field(_CORE.group_value, description="the group to build (empty: the largest)")
    min_val_episodes: int = Field(_CORE.min_val_episodes, description="move episodes to val until it holds this many")

    def to_core(self) -> SplitConfig:
        return SplitConfig(**self.model_dump())


@dg.asset(
    group_name="training",
    owners=OWNERS,
    kinds={"lerobot"},
    deps=[dg.AssetDep("recording_validation")],
    description="Train/val LeRobot v3.0 datasets under `$TATBOT_PIPELINE_HOME/splits/<version>/{train,val}` "
    "(`splits/latest` -> newest), merged from the usable episodes of every passing/warning recording. Rebuilt by "
    "itself after new validations (at most once per tick of `TATBOT_SPLIT_CRON`); an unchanged set of "
    "episodes keeps its version, which is its data version.",
)
def training_splits(context: dg.AssetExecutionContext, config: SplitRunConfig,
                    pipeline: PipelineResource) -> dg.MaterializeResult:
    result = build_splits(pipeline.settings, config.to_core())
    context.log.info(f"split {result.version} {'reused' if result.reused else 'built'} at {result.root}")
    return dg.MaterializeResult(metadata=split_metadata(result), data_version=dg.DataVersion(result.version))


def split_metadata(result: SplitResult) -> dict:
    m = result.manifest
    counts = {side: (m["sides"].get(side) or {"episodes": 0, "frames": 0}) for side in ("train", "val")}
    summary = (f"train {counts['train']['episodes']} / val {counts['val']['episodes']} episodes from "
               f"{len(m['recordings'])} recordings ({len(m['designs'])} designs), version {result.version}"
               + (" (reused: same episodes)" if result.reused else ""))
    entries: dict = {}
    for side in ("train", "val"):
        path = result.side_path(side)
        entries[f"{side}_episodes"] = number(counts[side]["episodes"])
        entries[f"{side}_frames"] = number(counts[side]["frames"])
        entries[f"{side}_path"] = dg.MetadataValue.path(str(path)) if path else "none (no episode on this side)"
    entries.update({
        "version": result.version,
        "reused": result.reused,
        "stroke_length_frames": number(m["stroke_length"]),  # what the training presets align chunk_size to
        "fps": number(m["fps"]),
        "path": dg.MetadataValue.path(str(result.root)),
    })
    last = {
        "excluded": dg.MetadataValue.md(excluded_markdown(m)),
        "recordings": dg.MetadataValue.json([r["name"] for r in m["recordings"]]),
        "designs": dg.MetadataValue.json(m["designs"]),
        "fingerprints": dg.MetadataValue.json({r["name"]: r["fingerprint"] for r in m["recordings"]}),
        "config": dg.MetadataValue.json(m["config"]),
    }
    if m["topped_up"]:
        last["val_topped_up"] = dg.MetadataValue.json(m["topped_up"])
    return headline_first(summary, entries, last)


build_splits_job = dg.define_asset_job(
    "build_splits", selection=[training_splits],
    description="Rebuild the train/val split from the current validation reports (automation does it by itself).")

def build(settings: PipelineSettings) -> dg.Definitions:
    return dg.Definitions(assets=[with_condition(training_splits, split_condition(settings.split_cron))],
                          jobs=[build_splits_job])
