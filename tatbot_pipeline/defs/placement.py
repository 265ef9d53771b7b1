"""Where runs execute under the production profile with Kubernetes (deploy/dagster.k8s.yaml): run tags only.

`K8sRunLauncher` reads the `dagster-k8s/config` run tag and shallow-merges it over its own `run_k8s_config`, whose
node selector keeps untagged runs (ingestion, splits, evaluation) on the Dagster host. Training runs carry
`gpu_run_tags(settings.train_gpus)`: the same selector key pointing at the GPU nodes, their GPU limit, the toleration GPU nodes are
usually tainted with, and a memory-backed /dev/shm (a container's 64 MB one kills DataLoader workers).
The embedded default instance ignores the tag: there everything runs on the one machine.
"""

from __future__ import annotations

import json

K8S_CONFIG_TAG = "dagster-k8s/config"
NODE_ROLE_LABEL = "tatbot/node-role"  # kubectl label node ook tatbot/node-role=gpu
GPU_ROLE = "gpu"
HOST_ROLE = "dagster-host"
GPU_RESOURCE = "nvidia.com/gpu"  # what the NVIDIA device plugin advertises


def gpu_k8s_config(gpus: int) -> dict:
    """The `dagster-k8s/config` of a run that must land on a GPU node with `gpus` GPUs."""
    return {
        "container_config": {
            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
            # The run worker trains with as many processes as the pod has GPUs (TrainingRunConfig.num_gpus empty: TATBOT_TRAIN_GPUS).
            "env": [{"name": "TATBOT_TRAIN_GPUS", "value": str(gpus)}],
            "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": {
            "node_selector": {NODE_ROLE_LABEL: GPU_ROLE},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory"}}],
        },
    }


def gpu_run_tags(gpus: int) -> dict[str, str]:
    """Run tags that send a run to a GPU node with `gpus` GPUs (tag values are strings: the config goes as JSON)."""
    return {K8S_CONFIG_TAG: json.dumps(gpu_k8s_config(gpus))}
