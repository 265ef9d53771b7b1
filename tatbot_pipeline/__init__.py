"""tatbot_pipeline: tatbot stroke recordings -> validated data -> trained VLA policies -> rollouts.

Importing the package makes the process offline-by-default before lerobot or huggingface_hub are imported:
a missing local file must fail loudly instead of silently reaching for the Hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

__version__ = "0.1.0"
