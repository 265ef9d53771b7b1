"""Session-wide tiny checkpoints, and an MCP server on a free loopback port driven by a real client over HTTP."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

from tests.inference.checkpoints import poison_with_nan, save_tiny_act_checkpoint


@pytest.fixture(scope="session")
def checkpoint_home(tmp_path_factory) -> Path:
    """A pipeline home holding the test checkpoints, as training would lay them out."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def act_checkpoint(checkpoint_home: Path, pristine_recording: Path) -> Path:
    out = checkpoint_home / "outputs" / "train" / "tiny-act" / "checkpoints" / "last" / "pretrained_model"
    return save_tiny_act_checkpoint(out, pristine_recording)


@pytest.fixture(scope="session")
def nan_checkpoint(checkpoint_home: Path, act_checkpoint: Path) -> Path:
    return poison_with_nan(act_checkpoint, checkpoint_home / "outputs" / "train" / "nan-act" / "pretrained_model")


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
