"""`tatbot-pipeline mcp` as users run it: a subprocess serving on loopback, reached by a real MCP client."""

from __future__ import annotations

import anyio

from tatbot_pipeline.cli import main
from tests.inference.conftest import mcp_session, server_process


def test_refuses_to_bind_beyond_loopback_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv("TATBOT_MCP_TOKEN", raising=False)
    assert main(["mcp", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0" in capsys.readouterr().err


def test_mcp_command_serves_vla_infer(checkpoint_home, act_checkpoint, tmp_path, robot_state_dir):
    with server_process(checkpoint_home, robot_state_dir, TATBOT_SCENES_DIR=str(tmp_path)) as (url, _):

        async def dry_run():
            async with mcp_session(url) as session:
                args = {"policy": "act", "checkpoint_path": str(act_checkpoint.relative_to(checkpoint_home)),
                        "device": "cpu", "dry_run": True}
                return await session.call_tool("vla_infer", args)

        result = anyio.run(dry_run)
        assert not result.is_error and result.structured_content["success"]
        assert "dry run OK" in result.structured_content["message"]
