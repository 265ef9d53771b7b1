"""tatbot_pipeline: tatbot stroke recordings -> validated data -> trained VLA policies -> rollouts.

Importing the package changes nothing: the entry points (cli.main, definitions.defs, training/pipes.py) make the
process offline-by-default (config.apply_offline_defaults) before anything imports lerobot or huggingface_hub.
"""

__version__ = "0.1.0"
