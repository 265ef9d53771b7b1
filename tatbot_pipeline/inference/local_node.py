"""An embedded robot node: the `vla_infer` MCP server with the sim backend, on a free loopback port, in a thread.

It lets `robot_eval` run on a fresh machine with no robot: the job talks MCP over HTTP exactly as it would to the
real node; only the URL differs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.server import MCP_PATH, RolloutService, ServerConfig, build_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(service: RolloutService, start_timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `service` on 127.0.0.1 (uvicorn in a daemon thread); yields the MCP URL, stops the server on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="embedded-robot-node", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("embedded robot node (MCP server) did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}{MCP_PATH}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# The embedded node's client is the job in the same process: on a loaded machine a ping it answers late says
# nothing about whether anyone is watching (and the sim moves nothing real), so it gets this long to answer.
EMBEDDED_CLIENT_TIMEOUT_S = 30.0


@contextmanager
def embedded_sim_node(settings: PipelineSettings) -> Iterator[str]:
    """The sim robot node for checkpoints under the pipeline home."""
    limits = replace(settings.rollout_limits,
                     client_timeout_s=max(settings.rollout_limits.client_timeout_s, EMBEDDED_CLIENT_TIMEOUT_S))
    config = ServerConfig(checkpoint_roots=(settings.home,), backend="sim",
                          settings=replace(settings, rollout_limits=limits))
    with serve_in_thread(RolloutService(config)) as url:
        yield url
