"""Put a checkpoint where the robot node loads it, and check it before anything moves.

Deployment is a copy of the `pretrained_model` dir: a local/shared-filesystem copy by default (the robot node mounts
the same NFS), or rsync over ssh to a remote node. The copy is named after the checkpoint's run so two deployed
checkpoints never overwrite each other. Each deployer checks the copy against the evaluated files before the node
may load it: the local one by the copy's digest (digest.py), rsync by a second, checksum-only pass that must find
nothing to transfer (rsync computes the checksums on the node, so the node's bytes are what is compared).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.digest import DigestMismatch, verify_checkpoint
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


def deploy_local(checkpoint: Path, dest_root: Path, sha256: str = "") -> Path:
    """Copy into `dest_root/<run>-<step>` (atomically: a half copy never looks deployed), then check the copy's
    digest against `sha256` (the evaluated one) when given. Idempotent."""
    dest = Path(dest_root) / deployed_name(checkpoint)
    if Path(checkpoint).resolve() != dest.resolve():
        staging = dest.with_name(f".{dest.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(checkpoint, staging)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    if sha256:
        verify_checkpoint(dest, sha256, f"the deployed copy {dest}")
    return dest


SSH = "ssh -o BatchMode=yes"


def rsync_command(checkpoint: Path, ssh_host: str, dest_root: str, ssh: str = SSH) -> list[str]:
    """The rsync that mirrors a checkpoint onto a remote node (key-based ssh assumed, as on tatbot's nodes)."""
    dest = f"{dest_root.rstrip('/')}/{deployed_name(checkpoint)}/"
    return ["rsync", "-a", "--delete", "--mkpath", "-e", ssh, f"{Path(checkpoint).resolve()}/", f"{ssh_host}:{dest}"]


def deploy_rsync(checkpoint: Path, ssh_host: str, dest_root: str, sha256: str = "", ssh: str = SSH) -> str:
    """rsync the checkpoint to the node, then verify: its local files are the evaluated ones (`sha256`), and a
    checksum-comparing dry run finds no file on the node that differs, is missing or is extra."""
    if sha256:
        verify_checkpoint(Path(checkpoint), sha256, f"checkpoint {checkpoint}")
    cmd = rsync_command(checkpoint, ssh_host, dest_root, ssh)
    _run(cmd, ssh_host)
    differing = _run([*cmd[:2], "--checksum", "--dry-run", "--itemize-changes", *cmd[2:]], ssh_host).split()
    if differing:
        raise DigestMismatch(f"the copy on {ssh_host} differs from the evaluated checkpoint after rsync "
                             f"({' '.join(differing)[:300]}) — check the node's disk and deploy again")
    return cmd[-1].split(":", 1)[1].rstrip("/")


def _run(cmd: list[str], ssh_host: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rsync to {ssh_host} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


@dataclass(frozen=True)
class DeployTarget:
    """Where a robot node loads checkpoints from, and how they get there."""

    mode: str = "local"  # a key of DEPLOYERS
    checkpoints_dir: str = ""  # on the node; empty with mode=local: <pipeline home>/deployed
    ssh_host: str = ""  # mode=rsync: e.g. tatbot@hog
    ssh: str = SSH  # mode=rsync: the remote shell rsync runs (port, identity, known-hosts options)


def _local(checkpoint: Path, target: DeployTarget, settings: PipelineSettings, sha256: str) -> str:
    root = Path(target.checkpoints_dir) if target.checkpoints_dir else settings.deployed_dir
    return str(deploy_local(checkpoint, root, sha256))


def _rsync(checkpoint: Path, target: DeployTarget, settings: PipelineSettings, sha256: str) -> str:
    if not target.ssh_host or not target.checkpoints_dir:
        raise ValueError("deploy mode rsync needs robot_node.ssh_host and robot_node.checkpoints_dir")
    return deploy_rsync(checkpoint, target.ssh_host, target.checkpoints_dir, sha256, target.ssh)


# mode -> (checkpoint, target, settings, the evaluated digest) -> the path the node loads
DEPLOYERS: dict[str, Callable[[Path, DeployTarget, PipelineSettings, str], str]] = {"local": _local, "rsync": _rsync}


def deploy(checkpoint: Path, target: DeployTarget, settings: PipelineSettings, sha256: str = "") -> str:
    """Put the checkpoint where the node loads it and check the copy is the evaluated files (`sha256`); returns the
    path on the node. A copy that does not match raises DigestMismatch."""
    try:
        deployer = DEPLOYERS[target.mode]
    except KeyError:
        raise ValueError(f"unknown deploy mode {target.mode!r}: use one of {sorted(DEPLOYERS)}") from None
    return deployer(Path(checkpoint), target, settings, sha256)
