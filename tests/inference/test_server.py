"""vla_infer over a real MCP client session (streamable HTTP, loopback) against the sim robot."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import anyio
import numpy as np
import pytest

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.rollout import VLAInferInput
from tatbot_pipeline.inference.server import RolloutService, ServerConfig
from tatbot_pipeline.scene_yaml import load_scene, secret_values
from tatbot_pipeline.robot.sim import SimFaults, SimRobot
from tatbot_pipeline.robot.spec import JOINT_LOWER, JOINT_UPPER, READY_POSE
from tests.inference.conftest import mcp_session, progress_event, running_server
from tests.inference.test_clients import LATE_PROGRESS_S

TOKEN = "s3cret-test-token"


class FaultySim:
    """Robot factory for the server: a SimRobot with the faults the current test asks for; keeps what it made."""

    def __init__(self) -> None:
        self.faults = SimFaults()
        self.robots: list[SimRobot] = []

    def __call__(self, scene, cameras, enable_realsense) -> SimRobot:
        robot = SimRobot(cameras=cameras, faults=self.faults, start=scene.sleep)
        self.robots.append(robot)
        return robot


@pytest.fixture(scope="module")
def sim() -> FaultySim:
    return FaultySim()


@pytest.fixture(scope="module")
def service(checkpoint_home: Path, act_checkpoint: Path, pristine_recording: Path, sim: FaultySim,
            robot_state_dir: Path) -> RolloutService:
    scenes = checkpoint_home / "scenes"
    scenes.mkdir(exist_ok=True)
    shutil.copy(pristine_recording / "scene.yaml", scenes / "tatbotlogo.yaml")  # a recording's scene, as is
    settings = PipelineSettings(home=checkpoint_home, robot_state_dir=robot_state_dir)
    config = ServerConfig(settings=settings, checkpoint_roots=(checkpoint_home,))
    return RolloutService(config, factory=sim, eval_root=checkpoint_home / "eval_datasets")


@pytest.fixture(scope="module")
def url(service: RolloutService):
    with running_server(service) as u:
        yield u


@pytest.fixture(autouse=True)
def no_faults(sim: FaultySim):
    sim.faults = SimFaults()
    yield


def call(url: str, args: dict, progress: list | None = None, token: str | None = None, until: str | None = None):
    """A vla_infer call; `until` keeps the session open until the progress message starting with it has reached the
    callback (the SDK hands notifications over on tasks of their own, possibly after the result: test_clients.py)."""
    async def main():
        arrived = anyio.Event()

        async def on_progress(p, total, message):
            if progress is not None:
                progress.append((p, message))
            if until is not None and (message or "").startswith(until):
                arrived.set()

        async with mcp_session(url, token) as session:
            result = await session.call_tool("vla_infer", args, progress_callback=on_progress)
            if until is not None:
                with anyio.move_on_after(LATE_PROGRESS_S):
                    await arrived.wait()
            return result

    return anyio.run(main)


def out(result) -> dict:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def act_args(checkpoint: Path, **kw) -> dict:
    return {"policy": "act", "checkpoint_path": str(checkpoint), "device": "cpu", "fps": 30, **kw}


def assert_parked(robot: SimRobot) -> None:
    """Ended at ready and disconnected, and nothing outside the URDF limits was ever sent."""
    assert not robot.is_connected
    np.testing.assert_allclose(robot.position, READY_POSE, atol=1e-6)
    np.testing.assert_allclose(robot.commands[-1], READY_POSE)
    sent = np.stack(robot.commands)
    assert np.isfinite(sent).all() and (sent >= JOINT_LOWER).all() and (sent <= JOINT_UPPER).all()


def test_tool_schema_is_the_seeds(url):
    async def main():
        async with mcp_session(url) as session:
            return (await session.list_tools()).tools

    (tool,) = anyio.run(main)
    assert tool.name == "vla_infer"
    assert list(tool.input_schema["properties"]) == list(VLAInferInput.model_fields)
    assert sorted(tool.input_schema["required"]) == ["checkpoint_path", "policy"]
    assert tool.input_schema["additionalProperties"] is False  # unknown fields are refused, and the schema says so
    for name, field in VLAInferInput.model_fields.items():
        assert tool.input_schema["properties"][name]["description"], name
        if not field.is_required():
            assert tool.input_schema["properties"][name]["default"] == field.default, name
    seed = {"success", "message", "num_steps", "eval_dir"}
    assert seed <= set(tool.output_schema["properties"])  # the seed's outputs, plus what the rollout measured
    assert {"stop_reason", "actions_clamped", "actions_rate_limited", "max_tracking_error_rad"} <= set(
        tool.output_schema["properties"])


def test_dry_run_loads_and_moves_nothing(url, act_checkpoint, sim):
    made = len(sim.robots)
    result = out(call(url, act_args(act_checkpoint, dry_run=True)))
    assert result["success"] and result["num_steps"] == 0 and result["eval_dir"] is None
    assert "dry run OK" in result["message"] and "nothing moved" in result["message"]
    assert len(sim.robots) == made  # no robot was even created


def test_full_rollout_records_an_eval_dataset_lerobot_loads(url, act_checkpoint, sim, pristine_recording):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    progress: list = []
    result = out(call(url, act_args(act_checkpoint, scene="tatbotlogo", max_steps=12, record_eval=True), progress,
                      until="parking: "))
    assert result["success"], result["message"]
    assert result["num_steps"] == 12
    messages = [m for _, m in progress]
    assert messages[0] == "loading scene tatbotlogo" and "step 12 of 12" in messages
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)
    assert_parked(sim.robots[-1])
    assert len(sim.robots[-1].commands) == 12 + 2  # ready, 12 policy steps, ready

    eval_dir = Path(result["eval_dir"])
    assert eval_dir.name.startswith("vla-eval-tatbotlogo-")
    ds = LeRobotDataset(f"tatbot/{eval_dir.name}", root=eval_dir, video_backend="pyav")
    assert ds.meta.total_episodes == 1 and len(ds) == 12
    recorded = LeRobotDataset("r", root=pristine_recording, video_backend="pyav")
    assert set(ds.features) == set(recorded.features) | {"inference"}  # + how each action came to be (per step)
    assert ds.features["inference"]["names"] == ["chunk_index", "chunk_latency_s", "rtc_merged", "chunk_skipped_steps",
                                                 "send_late_s"]
    np.testing.assert_allclose(ds[3]["action"].numpy(), sim.robots[-1].commands[1 + 3], atol=1e-6)
    meta = json.loads((eval_dir / "meta" / "vla_eval.json").read_text())
    assert meta["checkpoint_path"] == str(act_checkpoint) and meta["policy"] == "act" and meta["frames"] == 12
    snapshot = (eval_dir / "scene.yaml").read_text()
    secrets = secret_values(load_scene(pristine_recording / "scene.yaml"))
    assert secrets and not any(s in snapshot for s in secrets)
    assert "design_name" in snapshot


def test_seed_example_json_rolls_out_tiny_smolvla(url, smolvla_checkpoint, sim, checkpoint_home):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    # The seed's example, with device cpu and a short max_steps (two SmolVLA action chunks of 8).
    seed_example = {
        "policy": "smolvla",
        "checkpoint_path": "outputs/train/smolvla_tatbot/checkpoints/last/pretrained_model",
        "scene": "tatbotlogo",
        "device": "cpu",
        "max_steps": 16,
        "enable_realsense": True,
        "fps": 10,
        "record_eval": True,
    }
    assert checkpoint_home / seed_example["checkpoint_path"] == smolvla_checkpoint
    result = out(call(url, seed_example))
    assert result["success"], result["message"]
    assert result["num_steps"] == 16 and "smolvla from" in result["message"]
    ds = LeRobotDataset("tatbot/eval", root=result["eval_dir"], video_backend="pyav")
    assert len(ds) == 16 and ds.meta.total_episodes == 1
    assert ds[0]["task"].startswith("left: ")  # the scene's task string went to the policy and the dataset
    assert_parked(sim.robots[-1])


@pytest.mark.parametrize(
    "faults, reason, steps",
    [
        # Observation 1 is the check that the arms are at ready, before step 1's.
        (SimFaults(disconnect_at=5), "left arm not connected", 3),
        (SimFaults(camera_failure_at=4), "camera realsense1: black frame", 2),
        (SimFaults(camera_failure_at=1), "camera realsense1: black frame", 0),
    ],
    ids=["disconnect", "camera", "camera-at-start"],
)
def test_faults_stop_the_rollout_and_park_the_robot(url, act_checkpoint, sim, faults, reason, steps):
    sim.faults = faults
    result = out(call(url, act_args(act_checkpoint, max_steps=20, record_eval=True)))
    assert not result["success"]
    assert f"rollout stopped at step {steps}: " in result["message"] and reason in result["message"]
    assert "robot back at ready and disconnected" in result["message"]
    assert result["num_steps"] == steps and reason in result["stop_reason"]
    assert_parked(sim.robots[-1])
    if steps == 0:  # nothing recorded: no dataset LeRobot could not load, and the message says so
        assert result["eval_dir"] is None and "no frames were recorded" in result["message"]
        return
    meta = json.loads((Path(result["eval_dir"]) / "meta" / "vla_eval.json").read_text())
    assert meta["frames"] == steps  # finalized with what was recorded before the fault
    assert reason in meta["stop_reason"] and meta["parked"] is True


def test_a_nan_policy_is_refused_before_any_robot_connects(url, nan_checkpoint, sim):
    made = len(sim.robots)
    result = out(call(url, act_args(nan_checkpoint, max_steps=20)))
    assert not result["success"] and result["num_steps"] == 0
    assert "non-finite action on its warm-up pass — refused before connecting" in result["message"]
    assert len(sim.robots) == made  # no robot was even built, so nothing moved to ready


def test_cancel_stops_the_loop_and_returns_to_ready(url, act_checkpoint, sim, service):
    before = len(service.history)

    async def main():
        async with mcp_session(url) as session:
            running, on_progress = progress_event("step 3 of 5000")

            async with anyio.create_task_group() as tg:
                async def rollout():
                    await session.call_tool("vla_infer", act_args(act_checkpoint, max_steps=5000),
                                            progress_callback=on_progress)
                    raise AssertionError("a cancelled call must not return")

                tg.start_soon(rollout)
                with anyio.fail_after(60):
                    await running.wait()
                tg.cancel_scope.cancel()

    anyio.run(main)
    wait_for_history(service, before)
    last = service.history[-1]
    assert not last.success and "cancelled by the client" in last.message
    assert 3 <= last.num_steps < 1000
    assert_parked(sim.robots[-1])


def wait_for_history(service: RolloutService, before: int) -> None:
    """A cancelled call gets no answer; the server keeps the run's output once the robot is parked."""
    deadline = time.monotonic() + 30
    while len(service.history) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(service.history) > before, "the cancelled rollout never finished"


def test_a_second_concurrent_rollout_is_refused(url, act_checkpoint, sim, service):
    before = len(service.history)

    async def main():
        async with mcp_session(url) as first, mcp_session(url) as second:
            running, on_progress = progress_event("step 2 ")

            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: first.call_tool("vla_infer", act_args(act_checkpoint, max_steps=100000),
                                                      progress_callback=on_progress))
                with anyio.fail_after(60):
                    await running.wait()
                refused = await second.call_tool("vla_infer", act_args(act_checkpoint, max_steps=5))
                tg.cancel_scope.cancel()
                return refused

    result = out(anyio.run(main))
    assert not result["success"] and "another rollout is already running on the sim robot" in result["message"]
    wait_for_history(service, before + 1)  # the refusal is in the history too; then the cancelled first run
    assert "cancelled by the client" in service.history[-1].message
    assert_parked(sim.robots[-1])


def test_checkpoint_outside_the_allowed_roots_is_refused(url, act_checkpoint, tmp_path):
    elsewhere = shutil.copytree(act_checkpoint, tmp_path / "pretrained_model")
    for path in (str(elsewhere), "../" * 12 + str(elsewhere).lstrip("/")):
        result = call(url, act_args(path, dry_run=True))
        assert result.is_error
        text = result.content[0].text
        assert f"checkpoint {path} is outside the checkpoint roots this robot node serves" in text
        assert str(act_checkpoint.parents[4]) not in text  # the allowed root stays in the node's log


def test_relative_checkpoint_paths_resolve_under_the_pipeline_home(url, act_checkpoint, checkpoint_home):
    rel = act_checkpoint.relative_to(checkpoint_home)
    result = out(call(url, act_args(str(rel), dry_run=True)))
    assert result["success"] and str(act_checkpoint) in result["message"]


@pytest.mark.parametrize("field, value", [("max_steps", 0), ("max_steps", -3), ("fps", 0), ("device", "tpu")])
def test_invalid_inputs_are_refused_with_the_field_named(url, act_checkpoint, field, value):
    result = call(url, act_args(act_checkpoint, **{field: value}))
    assert result.is_error
    assert field in result.content[0].text


def test_wrong_policy_type_and_missing_checkpoint_say_what_to_do(url, act_checkpoint, checkpoint_home):
    result = out(call(url, act_args(act_checkpoint, policy="smolvla", dry_run=True)))
    assert not result["success"] and "is a 'act' policy, not 'smolvla' — pass policy='act'" in result["message"]
    result = out(call(url, act_args(checkpoint_home / "nope", dry_run=True)))
    assert not result["success"] and "no config.json" in result["message"]


def test_bearer_token_is_required_when_configured(checkpoint_home, act_checkpoint, sim):
    import httpx2

    config = ServerConfig(token=TOKEN, settings=PipelineSettings(home=checkpoint_home), checkpoint_roots=(checkpoint_home,))
    with running_server(RolloutService(config, factory=sim)) as token_url:
        for token in (None, "wrong"):
            response = httpx2.post(token_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                   headers={"Authorization": f"Bearer {token}"} if token else {})
            assert response.status_code == 401
            with pytest.raises(ExceptionGroup) as refused:  # the client's transport fails on the 401
                call(token_url, act_args(act_checkpoint, dry_run=True), token=token)
            assert "Server returned an error response" in repr(refused.value)
        result = out(call(token_url, act_args(act_checkpoint, dry_run=True), token=TOKEN))
        assert result["success"]


def test_binding_beyond_loopback_needs_a_token(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0.*TATBOT_MCP_TOKEN"):
        ServerConfig(host="0.0.0.0").check()
    ServerConfig(host="0.0.0.0", token=TOKEN).check()
    monkeypatch.setenv("TATBOT_MCP_TOKEN", TOKEN)
    monkeypatch.setenv("TATBOT_CHECKPOINT_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(tmp_path))
    config = ServerConfig.from_settings(PipelineSettings.from_env(), host="0.0.0.0")
    assert config.token == TOKEN and config.checkpoint_roots == (tmp_path / "a", tmp_path / "b")
    config.check()
    monkeypatch.delenv("TATBOT_CHECKPOINT_ROOTS")
    assert ServerConfig.from_settings(PipelineSettings.from_env()).checkpoint_roots == (tmp_path,)
