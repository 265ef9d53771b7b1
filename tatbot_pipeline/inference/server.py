"""MCP server exposing `vla_infer` over streamable HTTP (official `mcp` SDK 2.x, where FastMCP is `MCPServer`).

A rollout moves a robot, so the server is careful about who may start one: it binds to loopback by default, refuses
to bind anywhere else without a bearer token (TATBOT_MCP_TOKEN), and only loads checkpoints under the configured
roots (TATBOT_CHECKPOINT_ROOTS, default the pipeline home) — a checkpoint is pickled-free safetensors, but its
config still names code paths and a backbone dir. Arguments are validated strictly against `VLAInferInput` (the
published schema says `additionalProperties: false`). The rollout runs in a worker thread under a deadman (see
`RolloutService`); progress goes back as MCP progress notifications, and a client's cancel, like a lost client,
stops the loop and waits until the robot is back at ready and disconnected.

Both MCP protocol generations a client may speak are served, with the deadman each one allows:
- **2026-07-28** (the SDK's default `mcp.Client(url)`): a tool call is one POST and its response stream, with no
  session and no server-to-client requests, so the server cannot ping. Closing that stream is how such a client
  cancels, and what a client that died looks like (the kernel closes its socket): either stops and parks the
  robot. A client that is frozen (SIGSTOP) but whose socket stays open cannot be told from a slow reader; the
  server's step and time caps and the operator's arming bound that rollout.
- **earlier revisions with sessions** (`ClientSession` over `streamable_http_client`, what `robot_eval` uses): the
  same closed-stream check, plus pings on the request's own stream; a client that does not answer one within
  `client_timeout_s` is gone, frozen or not.
Remote callers read what was refused and why, never the node's paths, pids or hosts: those go to the node's log.
"""

from __future__ import annotations

import hmac
import logging
import queue
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import EmptyResult, PingRequest
from mcp.types import Tool as MCPTool
from pydantic import ValidationError
from starlette.applications import Starlette

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.control import RolloutControl
from tatbot_pipeline.inference.rollout import VLAInferInput, VLAInferOutput, input_error, checkpoint_location, vla_infer
from tatbot_pipeline.robot.backends import BACKENDS, RobotFactory
from tatbot_pipeline.robot.safety import RolloutLimits
from tatbot_pipeline.robot.scene import shown

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MCP_PATH = "/mcp"
TOOL_NAME = "vla_infer"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_TOKEN_LENGTH = 16
PUMP_PERIOD_S = 0.05  # progress flush + closed-stream check: well within one control period at 10 Hz
HEARTBEAT_PERIOD_S = 0.5  # pings on the request's stream; a client silent for client_timeout_s is gone
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
    def from_settings(cls, settings: PipelineSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                      backend: str | None = None) -> "ServerConfig":
        """The node's token, checkpoint roots and backend from its settings (TATBOT_MCP_TOKEN,
        TATBOT_CHECKPOINT_ROOTS, TATBOT_ROBOT_BACKEND); `backend` overrides the latter."""
        return cls(host=host, port=port, token=settings.mcp_token, checkpoint_roots=settings.allowed_checkpoint_roots,
                   backend=backend or settings.robot_backend, settings=settings)

    def check(self) -> None:
        """Refuse a configuration that would let anyone on the network move the robot."""
        if self.token is not None and (len(self.token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in self.token)):
            raise ValueError(f"TATBOT_MCP_TOKEN must be at least {MIN_TOKEN_LENGTH} characters with no whitespace — "
                             "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
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
    """The tool's behaviour, separate from MCP plumbing so the server and tests share it.

    Each call runs `vla_infer` in a worker thread under a deadman: the client must stay reachable. A closed stream
    or session, a progress notification that cannot be delivered, or a ping left unanswered for
    `client_timeout_s` means nobody is watching any more, so the rollout is stopped and parked. A cancel or a lost
    client that does not lead to a parked robot within `cancel_timeout_s` (a hung driver call) abandons the worker:
    its robot handle is revoked and its lock released, and the history says so.
    """

    def __init__(self, config: ServerConfig, factory: RobotFactory | None = None, eval_root: Path | None = None) -> None:
        self.config = config
        self.factory = factory
        self.eval_root = eval_root
        self.history: deque[VLAInferOutput] = deque(maxlen=50)  # every finished run, cancelled ones included

    @property
    def limits(self) -> RolloutLimits:
        return self.config.settings.rollout_limits

    def allowed(self, request_path: str) -> Path:
        path = checkpoint_location(request_path, self.config.settings.home)
        roots = [Path(r).resolve() for r in self.config.checkpoint_roots]
        if not any(path.is_relative_to(root) for root in roots):
            log.warning("refused checkpoint %s: outside the allowed roots %s", path, [str(r) for r in roots])
            raise ToolError(
                f"checkpoint {shown(request_path, 300, quote=False)} is outside the checkpoint roots this robot node "
                "serves — deploy it under one (robot_eval's deploy step does), or add its root to "
                "TATBOT_CHECKPOINT_ROOTS on the node"
            )
        return path

    async def run(self, request: VLAInferInput, ctx: Context | None = None) -> VLAInferOutput:
        request = request.model_copy(update={"checkpoint_path": str(self.allowed(request.checkpoint_path))})
        updates: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        control = RolloutControl()

        def work() -> VLAInferOutput:
            out = vla_infer(request, self.config.settings, backend=self.config.backend, factory=self.factory,
                            eval_root=self.eval_root, control=control, progress=lambda f, m: updates.put((f, m)))
            self.history.append(out)
            return out

        try:
            result = await self._supervise(work, ctx, control, updates)
        except anyio.get_cancelled_exc_class():
            # The call was cancelled (a `notifications/cancelled`, or on 2026-07-28 its stream closed): stop the loop
            # and hold the request open until the robot is parked.
            control.request_stop(_cancel_reason(ctx))
            with anyio.CancelScope(shield=True):
                await self._settle(control)
            raise
        if ctx is not None:
            try:
                await self._send_updates(ctx, updates)
            except Exception as e:  # noqa: BLE001 - the last lines of progress are a courtesy, the result is what counts
                log.warning("vla_infer: the last progress notifications were not delivered (%s: %s); %d left unsent",
                            type(e).__name__, e, updates.qsize())
        return result

    async def _supervise(self, work, ctx: Context | None, control: RolloutControl,
                         updates: queue.SimpleQueue) -> VLAInferOutput:
        results: list[VLAInferOutput] = []
        try:
            async with anyio.create_task_group() as tg:
                if ctx is not None:
                    tg.start_soon(self._deadman, ctx, control, updates)
                results.append(await anyio.to_thread.run_sync(work, abandon_on_cancel=True))
                tg.cancel_scope.cancel()
        except* RolloutAbandoned as group:
            results.append(group.exceptions[0].output)
        return results[-1]

    async def _deadman(self, ctx: Context, control: RolloutControl, updates: queue.SimpleQueue) -> None:
        """Watch the client until the rollout ends; when it is gone, stop the rollout and see it parked.

        What "gone" can mean depends on the client's protocol revision (module docstring): a closed stream and an
        undeliverable notification on every revision, an unanswered ping only where the transport can carry one."""
        watchers = [self._pump(ctx, updates)]
        if ctx.session.can_send_request:
            watchers.append(self._heartbeat(ctx))
        else:
            log.info("vla_infer client on %s: no back-channel for pings; its stream is watched",
                     ctx.request_context.protocol_version)
        gone = await _first_of(*watchers)
        log.error("vla_infer client gone (%s): stopping the rollout and parking the robot", gone)
        control.request_stop(gone)
        await self._settle(control)
        if control.abandoned:
            raise RolloutAbandoned(self.history[-1])

    async def _pump(self, ctx: Context, updates: queue.SimpleQueue) -> str:
        """Forward progress; returns why the client is gone: a closed stream, a notification that could not be
        delivered, or one the client did not take within `client_timeout_s` (it stopped reading)."""
        request = getattr(ctx.request_context, "request", None)
        timeout = self.limits.client_timeout_s
        while True:
            if request is not None and await request.is_disconnected():
                return _stream_closed_reason(ctx)
            try:
                with anyio.fail_after(timeout):
                    await self._send_updates(ctx, updates)
            except TimeoutError:
                return (f"the client went away (it took no progress notification for {timeout:g} s: it stopped "
                        "reading its stream): nobody is watching the robot")
            except Exception as e:  # noqa: BLE001 - any failure to deliver means the client cannot watch any more
                return (f"the client went away (a progress notification could not be delivered: {type(e).__name__}: "
                        f"{e}): nobody is watching the robot")
            await anyio.sleep(PUMP_PERIOD_S)

    async def _heartbeat(self, ctx: Context) -> str:
        """Ping the client on the request's own stream; returns why it is gone (no answer within the timeout).

        A transport that cannot carry a ping (NoBackChannelError) says nothing about the client: the heartbeat
        then stops, and the stream watch in `_pump` stays the deadman."""
        timeout = self.limits.client_timeout_s
        metadata = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
        while True:
            await anyio.sleep(min(HEARTBEAT_PERIOD_S, timeout / 2))
            try:
                with anyio.fail_after(timeout):
                    await ctx.session.send_request(PingRequest(), EmptyResult, request_read_timeout_seconds=timeout,
                                                   metadata=metadata)
            except NoBackChannelError:
                log.info("vla_infer client cannot answer pings on this transport; its stream is watched instead")
                await anyio.sleep_forever()
            except Exception as e:  # noqa: BLE001 - a timeout, a closed channel, an error reply: all mean gone
                return (f"the client went away (no answer to a ping within {timeout:g} s: {type(e).__name__}): "
                        "nobody is watching the robot")

    @staticmethod
    async def _send_updates(ctx: Context, updates: queue.SimpleQueue) -> None:
        while not updates.empty():
            fraction, message = updates.get_nowait()
            await ctx.report_progress(fraction, 1.0, message)

    async def _settle(self, control: RolloutControl) -> None:
        """Wait for a stopping rollout to park; abandon it (revoke + release) when it does not in time."""
        timeout = self.limits.cancel_timeout_s
        if await anyio.to_thread.run_sync(control.wait, timeout):
            return
        reason = f"the robot did not confirm it was parked within {timeout:g} s of the stop (a driver call hung?)"
        log.error("vla_infer abandoned: %s", reason)
        control.abandon(reason)
        self.history.append(VLAInferOutput(
            success=False, stop_reason=control.reason,
            message=f"rollout stopped ({control.reason}) but {reason}: its commands are revoked and the robot lock "
                    "released — CHECK THE ROBOT BY HAND before the next rollout"))


def _modern(ctx: Context | None) -> bool:
    """A 2026-07-28 call: one POST, no session, no back-channel (its stream closing is its cancel)."""
    return ctx is not None and not ctx.session.can_send_request


def _stream_closed_reason(ctx: Context) -> str:
    if _modern(ctx):
        return ("the client closed the call's stream (on MCP 2026-07-28 that is how a client cancels, and what a client "
                "that ended looks like)")
    return "the client went away (its HTTP stream closed): nobody is watching the robot"


def _cancel_reason(ctx: Context | None) -> str:
    return _stream_closed_reason(ctx) if _modern(ctx) else "cancelled by the client"


class RolloutAbandoned(Exception):
    """Raised out of the deadman to end a request whose worker could not be stopped in time."""

    def __init__(self, output: VLAInferOutput) -> None:
        super().__init__(output.message)
        self.output = output


async def _first_of(*coros) -> str:
    """Run the watchers together; the first to return wins and the others are cancelled."""
    result: list[str] = []
    async with anyio.create_task_group() as tg:
        async def run(coro) -> None:
            result.append(await coro)
            tg.cancel_scope.cancel()

        for coro in coros:
            tg.start_soon(run, coro)
    return result[0]


class RobotNodeServer(MCPServer):
    """An MCPServer whose `vla_infer` takes exactly a `VLAInferInput`.

    The SDK derives a tool's input model from its function signature and ignores unknown arguments; a robot must not
    (`{"dryrun": true}` would roll out for real). So the published input schema is `VLAInferInput`'s own
    (`additionalProperties: false`, every field described), the arguments are validated against it strictly before
    the tool runs, and the tool function receives them as one validated object.
    """

    async def list_tools(self) -> list[MCPTool]:
        schema = VLAInferInput.model_json_schema()
        return [t.model_copy(update={"input_schema": schema}) if t.name == TOOL_NAME else t
                for t in await super().list_tools()]

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None):
        if name == TOOL_NAME:
            try:
                arguments = {"request": VLAInferInput.model_validate(arguments).model_dump()}
            except ValidationError as e:
                raise ToolError(input_error(e)) from None
        return await super().call_tool(name, arguments, context)


def build_server(service: RolloutService) -> MCPServer:
    config = service.config
    auth = {}
    if config.token:
        # A static bearer token, no OAuth server: the SDK's AuthSettings needs an issuer URL it never uses then.
        auth = {"auth": AuthSettings(issuer_url="http://localhost", resource_server_url=None),
                "token_verifier": StaticTokenVerifier(config.token)}
    server = RobotNodeServer("tatbot-pipeline", instructions=TOOL_DESCRIPTION, **auth)

    @server.tool(name=TOOL_NAME, description=TOOL_DESCRIPTION)
    async def vla_infer_tool(request: dict[str, Any], ctx: Context) -> VLAInferOutput:
        return await service.run(VLAInferInput.model_validate(request), ctx)

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
