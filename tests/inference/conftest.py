"""Session-wide tiny checkpoints, and an MCP server on a free loopback port driven by a real client over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from tatbot_pipeline.processes import stop_process
from tests.inference.checkpoints import poison_with_nan, save_tiny_act_checkpoint, with_action_bias


@pytest.fixture(scope="session")
def checkpoint_home(tmp_path_factory) -> Path:
    """A pipeline home holding the test checkpoints, as training would lay them out."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def robot_state_dir(tmp_path_factory) -> Path:
    """This session's robot locks and arming file: never the node-wide default, which a real server may hold."""
    return tmp_path_factory.mktemp("robot-state")


@pytest.fixture(scope="session")
def act_checkpoint(checkpoint_home: Path, pristine_recording: Path) -> Path:
    out = checkpoint_home / "outputs" / "train" / "tiny-act" / "checkpoints" / "last" / "pretrained_model"
    return save_tiny_act_checkpoint(out, pristine_recording)


@pytest.fixture(scope="session")
def nan_checkpoint(checkpoint_home: Path, act_checkpoint: Path) -> Path:
    return poison_with_nan(act_checkpoint, checkpoint_home / "outputs" / "train" / "nan-act" / "pretrained_model")


@pytest.fixture(scope="session")
def wild_checkpoint(checkpoint_home: Path, act_checkpoint: Path) -> Path:
    """An ACT checkpoint that always asks for every joint 50 standard deviations away: the envelope must correct it."""
    return with_action_bias(act_checkpoint, checkpoint_home / "outputs" / "train" / "wild-act" / "pretrained_model", 50.0)


@pytest.fixture(scope="session")
def smolvla_checkpoint(checkpoint_home: Path, pristine_recording: Path) -> Path:
    """Tiny untrained SmolVLA (offline backbone) where the seed's example JSON points."""
    from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

    out = checkpoint_home / "outputs" / "train" / "smolvla_tatbot" / "checkpoints" / "last" / "pretrained_model"
    return save_tiny_smolvla_checkpoint(out, pristine_recording)


def running_server(service):
    """Serve `service` on a free loopback port in a thread (the embedded robot node's own helper); yields the URL."""
    from tatbot_pipeline.inference.local_node import serve_in_thread

    return serve_in_thread(service)


@asynccontextmanager
async def mcp_session(url: str, token: str | None = None) -> AsyncIterator:
    import httpx2
    from mcp.client import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def progress_event(prefix: str):
    """An event, set when a vla_infer progress message starts with `prefix` ("step 2 "), and the callback to pass."""
    import anyio

    event = anyio.Event()

    async def on_progress(progress, total, message):
        if message.startswith(prefix):
            event.set()

    return event, on_progress


def start_mcp_server(args: list[str], env: dict[str, str], log_dir: Path,
                     within_s: float = 90) -> tuple[str, subprocess.Popen, Path]:
    """`tatbot-pipeline mcp --port <free> ARGS` with `env`, its stderr in `log_dir`/mcp-server-<port>.log; returns
    (url, process, log) once it answers.

    The log goes to a file, never to a pipe nobody reads: once a pipe's 64 KiB fill up, the server's next log line
    blocks its event loop, and every client then times out (what CI saw after the killed-client tests)."""
    import httpx2

    from tatbot_pipeline.inference.local_node import free_port

    port = free_port()
    log = log_dir / f"mcp-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "tatbot_pipeline.cli", "mcp", "--port", str(port), *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + within_s
    while True:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            httpx2.get(url, timeout=1)
            return url, proc, log
        except httpx2.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the MCP server did not come up within {within_s:g} s: {log.read_text()[-4000:]}")
            time.sleep(0.2)


@contextmanager
def server_process(home: Path, state_dir: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`tatbot-pipeline mcp` as users start it, in its own process on a free port; yields (url, process).

    Checkpoints under the tests' checkpoint home are allowed; `env` adds TATBOT_* settings. Its log is beside the
    state dir, and its tail is printed when the block fails (pytest shows it with the failure)."""
    full_env = {**os.environ, "TATBOT_PIPELINE_HOME": str(home), "TATBOT_ROBOT_STATE_DIR": str(state_dir), **env}
    if "TATBOT_MCP_TOKEN" not in env:
        full_env.pop("TATBOT_MCP_TOKEN", None)
    url, proc, log = start_mcp_server([], full_env, Path(state_dir).parent)
    try:
        yield url, proc
    except BaseException:
        print(f"--- {log} (tail) ---\n{log.read_text()[-6000:]}")
        raise
    finally:
        stop_process(proc, 30)
