"""tatbot_pipeline: tatbot stroke recordings -> validated data -> trained VLA policies -> rollouts.

Layers. Imports point one way, down this list: a module imports what is below it, nothing above, and no two
modules or folders import each other (pyproject.toml holds the import-linter contracts; tests/test_project.py runs
them). A `|` joins layers that must not import each other either.

    cli, demo              entry points: the `tatbot-pipeline` command and `make demo`
    definitions, defs/     Dagster only: assets, checks, sensors, jobs, resources; bodies are a few calls
    evaluation/ | synth/   offline evaluation and the promotion gate | synthetic recordings (cli, demo, tests only)
    inference/ | training/ the vla_infer rollout, MCP server and client, rollout plan, checkpoint delivery |
                           presets, the lerobot-train runner, health checks, lineage
    datasets/              episode selection, deterministic train/val split, merged LeRobot datasets
    recordings/            scan, naming, validation rules -> ValidationReport, v2.1 conversion
    plots | promotion      every plot as a PNG data-URI | the leaderboard and promoted.json
    policy/                loading a checkpoint the way LeRobot does; the sync/async inference modes
    robot/                 the robot spec (joints, limits, cameras) and the backends (sim, tatbot), guard, safety
                           envelope, lock, arming: the robot node's lowest code
    leaves                 config (settings: plain values), checkpoints (lerobot-train's layout), console, display,
                           files, lerobot_tables (LeRobot table I/O), scene_yaml (reading scene.yaml safely)

Nothing below defs/ imports dagster. Importing the package changes nothing: the entry points (cli.main,
definitions.defs) make the process offline-by-default (config.apply_offline_defaults) before anything imports
lerobot or huggingface_hub.
"""

__version__ = "0.1.0"
