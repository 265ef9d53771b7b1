"""`tatbot-pipeline mcp` as users run it: a subprocess serving on loopback, reached by a real MCP client."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import httpx2

from tatbot_pipeline.cli import main
from tatbot_pipeline.inference.local_node import free_port
from tests.inference.conftest import mcp_session


def test_refuses_to_bind_beyond_loopback_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("TATBOT_MCP_TOKEN", raising=False)
    assert main(["mcp", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err


def test_mcp_command_serves_vla_infer(checkpoint_home, act_checkpoint, tmp_path):
    port = free_port()
    env = {**os.environ, "TATBOT_PIPELINE_HOME": str(checkpoint_home), "TATBOT_SCENES_DIR": str(tmp_path)}
    env.pop("TATBOT_MCP_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "tatbot_pipeline.cli", "mcp", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                httpx2.get(url, timeout=1)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)

        async def dry_run():
            async with mcp_session(url) as session:
                args = {"policy": "act", "checkpoint_path": str(act_checkpoint.relative_to(checkpoint_home)),
                        "device": "cpu", "dry_run": True}
                return await session.call_tool("vla_infer", args)

        result = anyio.run(dry_run)
        assert not result.is_error and result.structured_content["success"]
        assert "dry run OK" in result.structured_content["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
