"""MCP server exposing `vla_infer` over streamable HTTP (official `mcp` SDK 2.x, where FastMCP is `MCPServer`).

A rollout moves a robot, so the server is careful about who may start one: it binds to loopback by default, refuses
to bind anywhere else without a bearer token (TATBOT_MCP_TOKEN), and only loads checkpoints under the configured
roots (TATBOT_CHECKPOINT_ROOTS, default the pipeline home) — a checkpoint is pickled-free safetensors, but its
config still names code paths and a backbone dir. The rollout runs in a worker thread; progress goes back as MCP
progress notifications, and a client's cancel sets the loop's stop event and waits until the robot is back at
ready and disconnected.
"""

from __future__ import annotations

import hmac
import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from starlette.applications import Starlette

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.rollout import VLAInferInput, VLAInferOutput, resolve_checkpoint, vla_infer
from tatbot_pipeline.robot.backends import BACKENDS, RobotFactory

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MCP_PATH = "/mcp"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
TOOL_DESCRIPTION = (
    "Run a trained VLA policy (LeRobot checkpoint) on the tatbot: load scene and policy, move to ready, "
    "run the control loop at fps for up to max_steps (safety envelope on every action), return to ready. "
    "dry_run only loads and runs one forward pass; record_eval writes a vla-eval-{scene}-{timestamp} dataset."
)


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    checkpoint_roots: tuple[Path, ...] = ()
    backend: str = "sim"
    settings: PipelineSettings = field(default_factory=PipelineSettings)

    @classmethod
    def from_env(cls, settings: PipelineSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 backend: str | None = None) -> "ServerConfig":
        """TATBOT_MCP_TOKEN, TATBOT_CHECKPOINT_ROOTS (os.pathsep-separated), TATBOT_ROBOT_BACKEND."""
        env = os.environ
        roots = tuple(Path(p) for p in env.get("TATBOT_CHECKPOINT_ROOTS", "").split(os.pathsep) if p)
        return cls(host=host, port=port, token=env.get("TATBOT_MCP_TOKEN") or None,
                   checkpoint_roots=roots or (settings.home,), backend=backend or env.get("TATBOT_ROBOT_BACKEND", "sim"),
                   settings=settings)

    def check(self) -> None:
        """Refuse a configuration that would let anyone on the network move the robot."""
        if self.host not in LOOPBACK and not self.token:
            raise ValueError(
                f"refusing to serve on {self.host}: anyone who can reach it could move the robot — set TATBOT_MCP_TOKEN "
                f"to a secret bearer token, or bind to 127.0.0.1"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown robot backend {self.backend!r}; choose one of {sorted(BACKENDS)}")


class StaticTokenVerifier:
    """One shared bearer token (compared in constant time): enough for a robot node on a lab network."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token.encode()):
            return AccessToken(token=token, client_id="tatbot-operator", scopes=[])
        return None


class RolloutService:
    """The tool's behaviour, separate from MCP plumbing so the server and tests share it."""

    def __init__(self, config: ServerConfig, factory: RobotFactory | None = None, eval_root: Path | None = None) -> None:
        self.config = config
        self.factory = factory
        self.eval_root = eval_root
        self.history: deque[VLAInferOutput] = deque(maxlen=50)  # every finished run, cancelled ones included

    def allowed(self, checkpoint_path: str) -> Path:
        path = resolve_checkpoint(checkpoint_path, self.config.settings.home)
        roots = [Path(r).resolve() for r in self.config.checkpoint_roots]
        if not any(path.is_relative_to(root) for root in roots):
            raise ToolError(
                f"checkpoint {path} is outside the allowed roots {[str(r) for r in roots]} — "
                "move it under one, or add its root to TATBOT_CHECKPOINT_ROOTS on the server"
            )
        return path

    async def run(self, request: VLAInferInput, ctx: Context) -> VLAInferOutput:
        request = request.model_copy(update={"checkpoint_path": str(self.allowed(request.checkpoint_path))})
        updates: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        stop, done = threading.Event(), threading.Event()

        def work() -> VLAInferOutput:
            try:
                out = vla_infer(request, self.config.settings, backend=self.config.backend, factory=self.factory,
                                eval_root=self.eval_root, stop=stop, progress=lambda f, m: updates.put((f, m)))
                self.history.append(out)
                return out
            finally:
                done.set()

        async def send_updates() -> None:
            while not updates.empty():
                fraction, message = updates.get_nowait()
                await ctx.report_progress(fraction, 1.0, message)

        async def pump() -> None:
            while True:
                await send_updates()
                await anyio.sleep(0.05)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump)
                result = await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
                tg.cancel_scope.cancel()
            await send_updates()
            return result
        except anyio.get_cancelled_exc_class():
            # The client cancelled: stop the loop and hold the request open until the robot is safe again.
            stop.set()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(done.wait)
            raise


def build_server(service: RolloutService) -> MCPServer:
    config = service.config
    auth = {}
    if config.token:
        # A static bearer token, no OAuth server: the SDK's AuthSettings needs an issuer URL it never uses then.
        auth = {"auth": AuthSettings(issuer_url="http://localhost", resource_server_url=None),
                "token_verifier": StaticTokenVerifier(config.token)}
    server = MCPServer("tatbot-pipeline", instructions=TOOL_DESCRIPTION, **auth)

    @server.tool(name="vla_infer", description=TOOL_DESCRIPTION)
    async def vla_infer_tool(
        policy: Annotated[str, Field(description="'smolvla', 'pi0', or the type in the checkpoint's config.json")],
        checkpoint_path: Annotated[str, Field(description="pretrained_model dir; relative to the pipeline home")],
        ctx: Context,
        scene: Annotated[str, Field(description="scene name (<scenes dir>/<scene>.yaml or built-in)")] = "default",
        device: Literal["cuda", "cpu"] = "cuda",
        max_steps: Annotated[int, Field(gt=0, description="safety cap on control steps")] = 500,
        enable_realsense: bool = False,
        fps: Annotated[int, Field(gt=0, le=100, description="control rate in Hz")] = 10,
        debug: bool = False,
        record_eval: bool = False,
        dry_run: bool = False,
        task_prompt: str | None = None,
    ) -> VLAInferOutput:
        request = VLAInferInput(
            policy=policy, checkpoint_path=checkpoint_path, scene=scene, device=device, max_steps=max_steps,
            enable_realsense=enable_realsense, fps=fps, debug=debug, record_eval=record_eval, dry_run=dry_run,
            task_prompt=task_prompt,
        )
        return await service.run(request, ctx)

    return server


def build_app(service: RolloutService) -> Starlette:
    service.config.check()
    return build_server(service).streamable_http_app(streamable_http_path=MCP_PATH, host=service.config.host)


def serve(config: ServerConfig) -> None:
    """Blocking: run the server until interrupted (the `tatbot-pipeline mcp` command)."""
    import uvicorn

    app = build_app(RolloutService(config))
    auth = "bearer token required" if config.token else "no auth (loopback only)"
    log.warning("vla_infer MCP server on http://%s:%d%s (%s, %s backend)", config.host, config.port, MCP_PATH, auth,
                config.backend)
    uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info")).run()
