"""The code location: `dagster dev`, `dagster definitions validate` and `dagster job execute` load `defs` from here."""

import dagster as dg

from tatbot_pipeline.defs import automation
from tatbot_pipeline.defs import ingestion
from tatbot_pipeline.defs import splits
from tatbot_pipeline.defs import training
from tatbot_pipeline.defs import evaluation
from tatbot_pipeline.defs import robot
from tatbot_pipeline.defs.resources import default_resources

defs = dg.Definitions.merge(
    ingestion.defs,
    splits.defs,
    training.defs,
    evaluation.defs,
    robot.defs,
    automation.defs,
    # Steps run one after the other in the run's process: a subprocess per step would re-import torch and
    # lerobot each time (seconds), and training already isolates itself in a lerobot-train subprocess.
    dg.Definitions(resources=default_resources(), executor=dg.in_process_executor),
)
