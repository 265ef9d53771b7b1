"""The code location: `dagster dev`, `dagster definitions validate` and `dagster job execute` load `defs` from here.

The settings are read from the environment once, when the code location loads (not at import), and every piece
that depends on them (the loop's crons, training's GPU tags, robot_eval's node) is built from that one object.
"""

import dagster as dg

from tatbot_pipeline.config import PipelineSettings, apply_offline_defaults
from tatbot_pipeline.defs import automation
from tatbot_pipeline.defs import calibration
from tatbot_pipeline.defs import ingestion
from tatbot_pipeline.defs import splits
from tatbot_pipeline.defs import training
from tatbot_pipeline.defs import evaluation
from tatbot_pipeline.defs import robot
from tatbot_pipeline.defs import sim
from tatbot_pipeline.defs.resources import default_resources


def build_definitions(settings: PipelineSettings, resources: dict | None = None) -> dg.Definitions:
    """`resources`: the default resources (empty fields: read from the environment when a run starts) unless given."""
    return dg.Definitions.merge(
        ingestion.defs,
        splits.build(settings),
        training.build(settings),
        evaluation.defs,
        calibration.defs,
        sim.defs,
        robot.build(settings),
        automation.build(settings),
        # Steps run one after the other in the run's process: a subprocess per step would re-import torch and
        # lerobot each time (seconds), and training already isolates itself in a lerobot-train subprocess.
        dg.Definitions(resources=resources or default_resources(), executor=dg.in_process_executor),
    )


@dg.definitions
def defs() -> dg.Definitions:
    apply_offline_defaults()  # before any step imports lerobot / huggingface_hub
    return build_definitions(PipelineSettings.from_env())
