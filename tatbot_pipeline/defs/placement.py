"""Where runs execute under the production profile with Kubernetes (deploy/dagster.k8s.yaml): run tags only.

`K8sRunLauncher` reads the `dagster-k8s/config` run tag and shallow-merges it over its own `run_k8s_config`, whose
node selector keeps untagged runs (ingestion, splits, evaluation) on the Dagster host. Training runs carry
`gpu_run_tags()`: the same selector key pointing at the GPU nodes, their GPU limit, the toleration GPU nodes are
usually tainted with, and a memory-backed /dev/shm (a container's 64 MB one kills DataLoader workers).
The embedded default instance ignores the tag: there everything runs on the one machine.
"""

from __future__ import annotations

import json
import os

K8S_CONFIG_TAG = "dagster-k8s/config"
NODE_ROLE_LABEL = "tatbot/node-role"  # kubectl label node ook tatbot/node-role=gpu
GPU_ROLE = "gpu"
HOST_ROLE = "dagster-host"
GPU_RESOURCE = "nvidia.com/gpu"  # what the NVIDIA device plugin advertises


def train_gpus() -> int:
    """GPUs one training asks for: TATBOT_TRAIN_GPUS (default 1); >1 pairs with a multi-GPU preset option."""
    value = os.environ.get("TATBOT_TRAIN_GPUS", "1")
    try:
        gpus = int(value)
    except ValueError:
        raise ValueError(f"TATBOT_TRAIN_GPUS={value!r}: expected a whole number of GPUs (1, 2, ...)") from None
    if gpus < 1:
        raise ValueError(f"TATBOT_TRAIN_GPUS={gpus}: a training needs at least one GPU")
    return gpus


def gpu_k8s_config(gpus: int) -> dict:
    """The `dagster-k8s/config` of a run that must land on a GPU node with `gpus` GPUs."""
    return {
        "container_config": {
            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
            # The run worker trains with as many processes as the pod has GPUs (TrainingRunConfig.num_gpus = 0).
            "env": [{"name": "TATBOT_TRAIN_GPUS", "value": str(gpus)}],
            "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": {
            "node_selector": {NODE_ROLE_LABEL: GPU_ROLE},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory"}}],
        },
    }


def gpu_run_tags(gpus: int | None = None) -> dict[str, str]:
    """Run/op tags that send a run to a GPU node (tag values must be strings: the config goes as JSON)."""
    return {K8S_CONFIG_TAG: json.dumps(gpu_k8s_config(gpus or train_gpus()))}
