"""A robot node that does not share the Dagster host's filesystem: `deploy: rsync` over a real ssh server.

A throwaway sshd (Debian's openssh-server, a high loopback port, its own host key, one authorized key) stands in for
hog; a real `tatbot-pipeline mcp` on that "node" serves checkpoints only from the node's own checkpoints dir. The
promoted checkpoint therefore reaches the arms only through rsync, and only as the bytes that were evaluated.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.robot import RobotNode, robot_eval
from tatbot_pipeline.digest import checkpoint_sha256
from tatbot_pipeline.inference.client import call_vla_infer
from tatbot_pipeline.inference.local_node import free_port
from tests.inference.checkpoints import save_tiny_act_checkpoint
from tests.inference.conftest import server_process

# Beside the daemon test in `make test`'s second worker (tests/conftest.py): self-contained (its own servers or
# simulated controllers on free loopback addresses), and the daemon test mostly waits for cron ticks.
pytestmark = pytest.mark.xdist_group("daemon")

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshNode:
    host: str  # user@address, as robot_node.ssh_host
    ssh: str  # the remote shell rsync runs, as robot_node.ssh


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> SshNode:
    if not SSHD.exists():
        pytest.fail("no /usr/sbin/sshd: `scripts/setup.sh --with-test-deps` installs openssh-server (make test does)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PidFile {d / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
""")  # StrictModes would refuse keys below /tmp (mode 1777); the keys themselves are in a 0700 dir
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation dir, which the service would have made
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 30
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert proc.poll() is None, (d / "sshd.log").read_text()
        assert time.monotonic() < deadline, "sshd did not come up"
        time.sleep(0.05)
    ssh = (f"ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={d / 'known_hosts'} "
           f"-i {d / 'client_key'} -p {port}")
    try:
        yield SshNode(host=f"{getpass.getuser()}@127.0.0.1", ssh=ssh)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_robot_eval_deploys_over_rsync_and_the_node_refuses_a_tampered_copy(sshd, pristine_recording, tmp_path):
    # The Dagster host: a promoted checkpoint, with the digest policy_evaluation recorded.
    host_home = tmp_path / "dagster-host"
    ckpt = save_tiny_act_checkpoint(host_home / "outputs/train/act-1/checkpoints/last/pretrained_model",
                                    pristine_recording)
    digest = checkpoint_sha256(ckpt)
    (host_home / "promoted.json").write_text(json.dumps({"checkpoint": str(ckpt), "checkpoint_sha256": digest,
                                                         "mae": 0.1, "promoted": True,
                                                         "sim": {"passed": True, "strokes": 8}}))
    # The node: its own home, and checkpoints only from its own dir.
    node = tmp_path / "hog"
    node_checkpoints = node / "checkpoints"
    # The deadman's ping timeout (2 s by default) is not what this test is about: the client here is a job run in
    # the test's own process, which on a loaded 2-core machine can miss a 2 s ping (tests/inference/test_clients.py
    # tests the deadman itself).
    with server_process(node / "home", node / "state", TATBOT_CHECKPOINT_ROOTS=str(node_checkpoints),
                        TATBOT_ROLLOUT_CLIENT_TIMEOUT_S="15") as (url, _):
        resources = {
            "pipeline": PipelineResource(home=str(host_home), recordings_dir=str(tmp_path / "none")),
            "robot_node": RobotNode(name="hog", mcp_url=url, deploy="rsync", checkpoints_dir=str(node_checkpoints),
                                    ssh_host=sshd.host, ssh=sshd.ssh),
        }
        with dg.instance_for_test() as instance:
            result = robot_eval.execute_in_process(
                instance=instance, raise_on_error=False, resources=resources,
                run_config={"ops": {"resolve_checkpoint": {"config": {"device": "cpu", "max_steps": 6, "fps": 20}}}})
            assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
            [mat] = [m for m in result.get_asset_materialization_events()
                     if m.asset_key == dg.AssetKey("eval_dataset")]
        meta = mat.materialization.metadata
        deployed = node_checkpoints / "act-1-last"
        assert checkpoint_sha256(deployed) == digest == meta["checkpoint_sha256"].value
        eval_dir = Path(meta["path"].value)
        assert eval_dir.is_relative_to(node / "home")  # recorded on the node
        assert json.loads((eval_dir / "meta" / "vla_eval.json").read_text())["checkpoint_sha256"] == digest

        # Tampered with on the node between deploy and rollout: the node refuses before loading anything.
        data = bytearray((deployed / "model.safetensors").read_bytes())
        data[len(data) // 3] ^= 0x01
        (deployed / "model.safetensors").write_bytes(bytes(data))
        out = call_vla_infer(url, {"policy": "act", "checkpoint_path": str(deployed), "device": "cpu",
                                   "max_steps": 3, "checkpoint_sha256": digest})
        assert not out.success and "changed since it was evaluated" in out.message and out.num_steps == 0

        # The source itself is not served by the node: only what was deployed to its dir.
        refused = call_vla_infer_error(url, str(ckpt))
        assert "outside the checkpoint roots this robot node serves" in refused


def call_vla_infer_error(url: str, checkpoint: str) -> str:
    from tatbot_pipeline.inference.client import RobotNodeError

    with pytest.raises(RobotNodeError) as e:
        call_vla_infer(url, {"policy": "act", "checkpoint_path": checkpoint, "device": "cpu", "dry_run": True})
    return str(e.value)
