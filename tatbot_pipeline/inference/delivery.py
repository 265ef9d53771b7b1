"""Put a checkpoint where the robot node loads it, and check it before anything moves.

Deployment is a copy of the `pretrained_model` dir: a local/shared-filesystem copy by default (the robot node mounts
the same NFS), or rsync over ssh to a remote node. The copy is named after the checkpoint's run so two deployed
checkpoints never overwrite each other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.checkpoints import run_and_step

REQUIRED_FILES = ("config.json", "model.safetensors")


def check_checkpoint(path: Path) -> list[str]:
    """Every problem that would make a rollout fail at load time (empty list = loadable as far as files go)."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} does not exist — pass a pretrained_model dir (outputs/train/<run>/checkpoints/last/pretrained_model)"]
    problems = [f"{path}: {name} missing" for name in REQUIRED_FILES if not (path / name).is_file()]
    if not problems:
        try:
            config = json.loads((path / "config.json").read_text())
        except ValueError as e:
            return [f"{path}/config.json unreadable: {e}"]
        if "type" not in config:
            problems.append(f"{path}/config.json has no policy 'type'")
        if not list(path.glob("policy_preprocessor*.json")):
            problems.append(f"{path}: no policy_preprocessor.json (normalisation stats) — was it saved by lerobot-train?")
    return problems


def deployed_name(checkpoint: Path) -> str:
    """<run>-<step>, e.g. tiny_smolvla-1a2b3c4d-last, from .../outputs/train/<run>/checkpoints/<step>/pretrained_model."""
    found = run_and_step(Path(checkpoint).resolve())
    return "-".join(found) if found else Path(checkpoint).resolve().name


def deploy_local(checkpoint: Path, dest_root: Path) -> Path:
    """Copy into `dest_root/<run>-<step>` (atomically: a half copy never looks deployed). Idempotent."""
    dest = Path(dest_root) / deployed_name(checkpoint)
    if Path(checkpoint).resolve() == dest.resolve():
        return dest
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def rsync_command(checkpoint: Path, ssh_host: str, dest_root: str) -> list[str]:
    """The rsync that mirrors a checkpoint onto a remote node (key-based ssh assumed, as on tatbot's nodes)."""
    dest = f"{dest_root.rstrip('/')}/{deployed_name(checkpoint)}/"
    return ["rsync", "-a", "--delete", "--mkpath", "-e", "ssh -o BatchMode=yes", f"{Path(checkpoint).resolve()}/", f"{ssh_host}:{dest}"]


def deploy_rsync(checkpoint: Path, ssh_host: str, dest_root: str) -> str:
    cmd = rsync_command(checkpoint, ssh_host, dest_root)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rsync to {ssh_host} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return cmd[-1].split(":", 1)[1].rstrip("/")


@dataclass(frozen=True)
class DeployTarget:
    """Where a robot node loads checkpoints from, and how they get there."""

    mode: str = "local"  # a key of DEPLOYERS
    checkpoints_dir: str = ""  # on the node; empty with mode=local: <pipeline home>/deployed
    ssh_host: str = ""  # mode=rsync: e.g. tatbot@hog


def _local(checkpoint: Path, target: DeployTarget, settings: PipelineSettings) -> str:
    return str(deploy_local(checkpoint, Path(target.checkpoints_dir) if target.checkpoints_dir else settings.deployed_dir))


def _rsync(checkpoint: Path, target: DeployTarget, settings: PipelineSettings) -> str:
    if not target.ssh_host or not target.checkpoints_dir:
        raise ValueError("deploy mode rsync needs robot_node.ssh_host and robot_node.checkpoints_dir")
    return deploy_rsync(checkpoint, target.ssh_host, target.checkpoints_dir)


# mode -> (checkpoint, target, settings) -> the path the node loads
DEPLOYERS: dict[str, Callable[[Path, DeployTarget, PipelineSettings], str]] = {"local": _local, "rsync": _rsync}


def deploy(checkpoint: Path, target: DeployTarget, settings: PipelineSettings) -> str:
    """Put the checkpoint where the node loads it; returns that path (on the node)."""
    try:
        deployer = DEPLOYERS[target.mode]
    except KeyError:
        raise ValueError(f"unknown deploy mode {target.mode!r}: use one of {sorted(DEPLOYERS)}") from None
    return deployer(Path(checkpoint), target, settings)
