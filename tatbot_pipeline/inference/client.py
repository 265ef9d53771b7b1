"""Call `vla_infer` on a robot node's MCP server, streaming its progress to a callback.

Used by the `robot_eval` job; plain asyncio + the official `mcp` client, so it works from any Python process.

Which client, and why: `ClientSession` over `streamable_http_client`, which negotiates a protocol revision with
sessions, not the SDK's default `mcp.Client(url)` (2026-07-28, no session). Both roll out the same (server.py), but
only a session lets the node ping its caller, so only on a session does the node notice a `robot_eval` process that
is frozen (SIGSTOP, a stalled VM) rather than dead, and park the robot within `TATBOT_ROLLOUT_CLIENT_TIMEOUT_S`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio

from tatbot_pipeline.inference.rollout import VLAInferOutput

Progress = Callable[[float, str], None]


class RobotNodeError(RuntimeError):
    """The robot node could not be reached or refused the call (auth, validation); the message says which."""


AUTH_HINT = {
    401: "401 Unauthorized: the robot node wants a bearer token and did not accept this one — set the robot_node "
         "resource's token (e.g. {env: TATBOT_MCP_TOKEN}) to the TATBOT_MCP_TOKEN the node's `tatbot-pipeline mcp` runs with",
    403: "403 Forbidden: the robot node accepted the token but refused the call — check the token's scope on the node",
}


async def _call(url: str, token: str | None, arguments: dict[str, Any], on_progress: Progress, timeout_s: float,
                statuses: list[int]) -> VLAInferOutput:
    import httpx2
    from mcp.client import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def progress(done: float, total: float | None, message: str | None) -> None:
        on_progress(done / (total or 1.0), message or "")

    async def remember_status(response) -> None:
        # The SDK turns an HTTP error into "Server returned an error response" and drops the status; keep it.
        if response.status_code in AUTH_HINT:
            statuses.append(response.status_code)

    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=timeout_s),
                                  event_hooks={"response": [remember_status]}) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool("vla_infer", arguments, progress_callback=progress)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content).strip()
        raise RobotNodeError(f"vla_infer refused on {url}: {text or 'no message'}")
    payload = result.structured_content or json.loads(result.content[0].text)
    return VLAInferOutput.model_validate(payload)


def call_vla_infer(url: str, arguments: dict[str, Any], token: str | None = None, on_progress: Progress | None = None,
                   timeout_s: float = 3600.0) -> VLAInferOutput:
    """Blocking call of the `vla_infer` tool. Connection and auth problems raise RobotNodeError with the URL."""
    statuses: list[int] = []
    try:
        return anyio.run(_call, url, token, arguments, on_progress or (lambda f, m: None), timeout_s, statuses)
    except RobotNodeError:
        raise
    except Exception as e:  # boundary: httpx/anyio errors arrive wrapped in exception groups; name the node instead
        if statuses:
            raise RobotNodeError(f"cannot run vla_infer on {url}: {AUTH_HINT[statuses[0]]}") from e
        leaf = e
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        raise RobotNodeError(f"cannot run vla_infer on {url}: {type(leaf).__name__}: {leaf}") from e
