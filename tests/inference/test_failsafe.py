"""The robot never moves unattended, on a typo, or on a bad policy (issue 15).

Real server processes (`tatbot-pipeline mcp`) and real clients (`call_vla_infer`, what `robot_eval` runs) that are
killed, stopped or frozen mid-rollout; faults injected in the sim; typos sent over MCP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
import yaml

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.inference.client import RobotNodeError, call_vla_infer
from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer
from tatbot_pipeline.inference.server import RolloutService, ServerConfig
from tatbot_pipeline.robot import backends
from tatbot_pipeline.robot.arming import arm, disarm
from tatbot_pipeline.robot.safety import RolloutLimits
from tatbot_pipeline.robot.sim import SimFaults, SimRobot
from tatbot_pipeline.robot.spec import READY_POSE
from tests.inference.conftest import mcp_session, progress_event, running_server, server_process
from tests.inference.test_server import FaultySim, assert_parked, call, out

REPO = Path(__file__).resolve().parents[2]
CLIENT = """
import json, sys
from tatbot_pipeline.inference.client import call_vla_infer
out = call_vla_infer(sys.argv[1], json.loads(sys.argv[2]), on_progress=lambda f, m: print(m, flush=True))
print("RESULT " + out.model_dump_json(), flush=True)
"""


def act_args(checkpoint: Path, **kw) -> dict:
    return {"policy": "act", "checkpoint_path": str(checkpoint), "device": "cpu", "fps": 10, **kw}


def start_client(url: str, args: dict) -> subprocess.Popen:
    """The project's own MCP client (what robot_eval runs) in a process of its own, printing progress lines."""
    return subprocess.Popen([sys.executable, "-c", CLIENT, url, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the client ended before printing {prefix!r}")


# How long a test waits for the robot to be free again: a bound for a loaded CI machine, not a target. The lock is
# held until the stopped rollout has parked and encoded its eval episode; what bounds the stop itself is asserted on
# the recording (frames).
FREED_WITHIN_S = 120


def rollout_until_accepted(url: str, args: dict, within_s: float = FREED_WITHIN_S) -> dict:
    """Start short rollouts until one succeeds (the robot lock is free again), or `within_s` ran out; returns it."""
    started = time.monotonic()
    while True:
        result = call_vla_infer(url, args)
        if result.success or time.monotonic() - started > within_s:
            return result.model_dump()
        assert "another rollout is already running" in result.message, result.message
        time.sleep(0.2)


def latest_eval_meta(home: Path) -> dict:
    newest = max((home / "eval_datasets").iterdir(), key=lambda p: p.stat().st_mtime)
    return json.loads((newest / "meta" / "vla_eval.json").read_text())


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM", "frozen (SIGSTOP)"])
def test_a_client_that_goes_away_stops_the_rollout_parks_and_frees_the_robot(
        how, act_checkpoint, checkpoint_home, tmp_path):
    home = tmp_path / "node-home"
    # 4 s: a bound a live client keeps on a loaded machine (at 1.5 s, a CI run beside the loop's daemon test read a
    # live client as gone before step 5), and still a stop within 100 frames at 10 Hz.
    env = {"TATBOT_CHECKPOINT_ROOTS": str(checkpoint_home), "TATBOT_ROLLOUT_CLIENT_TIMEOUT_S": "4"}
    with server_process(home, tmp_path / "state", **env) as (url, _):
        client = start_client(url, act_args(act_checkpoint, max_steps=5000, record_eval=True))
        wait_for_line(client, "step 5 ")
        os.kill(client.pid, {"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM,
                             "frozen (SIGSTOP)": signal.SIGSTOP}[how])
        try:
            result = rollout_until_accepted(url, act_args(act_checkpoint, max_steps=3))
        finally:
            client.kill()
            client.wait()
        assert result["success"], result["message"]
        killed = [json.loads(p.read_text()) for p in (home / "eval_datasets").glob("*/meta/vla_eval.json")
                  if json.loads(p.read_text())["max_steps"] == 5000]
    (meta,) = killed
    assert "the client went away" in meta["stop_reason"] and meta["parked"] is True
    assert 5 <= meta["frames"] < 100  # stopped within a couple of seconds at 10 Hz, not run on to max_steps


def test_two_server_processes_never_drive_one_robot(act_checkpoint, checkpoint_home, tmp_path):
    # The lock is what is tested, not the deadman's ping bound: 10 s, so a loaded machine does not read as a lost client.
    env = {"TATBOT_CHECKPOINT_ROOTS": str(checkpoint_home), "TATBOT_ROLLOUT_CLIENT_TIMEOUT_S": "10"}
    state = tmp_path / "state"
    with server_process(tmp_path / "a", state, **env) as (first, _), server_process(tmp_path / "b", state, **env) as (second, _):
        client = start_client(first, act_args(act_checkpoint, max_steps=100000))
        try:
            wait_for_line(client, "step 2 ")
            refused = call_vla_infer(second, act_args(act_checkpoint, max_steps=3))
            in_process = vla_infer(VLAInferInput(**act_args(act_checkpoint, max_steps=3)),
                                   PipelineSettings(home=tmp_path / "c", robot_state_dir=state))
        finally:
            client.kill()
            client.wait()
        for out_ in (refused, in_process):
            assert not out_.success and "another rollout is already running on the sim robot (since" in out_.message
        result = rollout_until_accepted(second, act_args(act_checkpoint, max_steps=3))
        assert result["success"]


# --- strict input, over MCP against an in-process server whose sim counts the robots it builds -----------------


@pytest.fixture(scope="module")
def node(checkpoint_home: Path, pristine_recording: Path, tmp_path_factory):
    """An in-thread server with its own scenes (good and broken ones) and short limits; yields (url, sim, service)."""
    root = tmp_path_factory.mktemp("failsafe")
    scenes = root / "scenes"
    scenes.mkdir()
    real = yaml.safe_load((pristine_recording / "scene.yaml").read_text().replace("!!python/tuple", "").replace(
        "!!python/object/apply:pathlib.PosixPath", ""))
    (scenes / "tatbotlogo.yaml").write_text((pristine_recording / "scene.yaml").read_text())
    broken = {
        "nan-pose": {"ready_pos_l": {"joints": [float("nan")] * 7}, "ready_pos_l_name": None},
        "bad-pose-name": {"ready_pos_l_name": "left/redy", "ready_pos_r_name": "right/ready"},
        "negative-goal": {"arms": {"goal_time_slow": -1.0}},
        "nan-goal": {"arms": {"goal_time_fast": float("nan")}},
        "bent": {"ready_pos_l": {"joints": [0, 0, 0, 0, 0, 4.0, 0]}, "ready_pos_l_name": None},
    }
    base = {k: v for k, v in real.items() if k.endswith("_name")}
    for name, override in broken.items():
        scene = {k: v for k, v in {**base, **override}.items() if v is not None}
        (scenes / f"{name}.yaml").write_text(yaml.safe_dump(scene))
    sim = FaultySim()
    limits = RolloutLimits(max_steps=40, max_adjusted_steps=5, cancel_timeout_s=1.5, start_timeout_s=1.0)
    settings = PipelineSettings(home=checkpoint_home, scenes=scenes, robot_state_dir=root / "state", rollout_limits=limits)
    service = RolloutService(ServerConfig(settings=settings, checkpoint_roots=(checkpoint_home,)), factory=sim,
                             eval_root=root / "eval")
    with running_server(service) as url:
        yield url, sim, service


@pytest.fixture(autouse=True)
def _no_faults(request):
    yield
    if "node" in request.fixturenames:
        request.getfixturevalue("node")[1].faults = SimFaults()


@pytest.mark.parametrize("extra, complaint", [
    ({"dryrun": True}, "unknown field 'dryrun'"),
    ({"dry-run": True}, "unknown field 'dry-run'"),
    ({"dry_run": "no"}, "dry_run: Input should be a valid boolean"),
    ({"dry_run": 0}, "dry_run: Input should be a valid boolean"),
    ({"max_steps": "5"}, "max_steps: Input should be a valid integer"),
    ({"record_eval": "true"}, "record_eval: Input should be a valid boolean"),
    ({"checkpoint_path": "/tmp/x\x00y"}, "contains a control character"),
    ({"scene": "a" * 100_000}, "is 100000 characters long"),
])
def test_typos_and_coercions_are_refused_before_any_robot_is_built(node, act_checkpoint, extra, complaint):
    url, sim, _ = node
    made = len(sim.robots)
    result = call(url, {**act_args(act_checkpoint, max_steps=3), **extra})
    assert result.is_error
    text = result.content[0].text
    assert complaint in text and len(text) < 1500  # a 100k-character value is never echoed back
    assert len(sim.robots) == made


def test_a_mistyped_scene_lists_the_scenes_there_are(node, act_checkpoint):
    url, sim, _ = node
    made = len(sim.robots)
    result = out(call(url, act_args(act_checkpoint, scene="tatbotlgo", max_steps=3)))
    assert not result["success"]
    assert "unknown scene 'tatbotlgo'" in result["message"]
    assert "Available scenes: bad-pose-name, bent, default, nan-goal, nan-pose, negative-goal, tatbotlogo" in result["message"]
    assert len(sim.robots) == made


@pytest.mark.parametrize("scene, complaint", [
    ("nan-pose", "ready pose: non-finite target left.joint_0.pos=nan"),
    ("bad-pose-name", "unknown pose name 'left/redy'"),
    ("negative-goal", "arms.goal_time_slow: goal time -1.0 s must be in (0, 30]"),
    ("nan-goal", "arms.goal_time_fast: goal time nan s"),
    ("bent", "ready pose: outside the URDF limits left.joint_5.pos=4.0000"),
])
def test_scene_values_are_checked_before_any_robot_is_built(node, act_checkpoint, scene, complaint):
    url, sim, _ = node
    made = len(sim.robots)
    result = out(call(url, act_args(act_checkpoint, scene=scene, max_steps=3)))
    assert not result["success"] and complaint in result["message"], result["message"]
    assert f"scene '{scene}'" in result["message"] and len(sim.robots) == made
    assert f"{scene}.yaml" not in result["message"]  # the node's paths stay in its log


def test_the_scene_named_by_the_recorder_resolves_its_poses_by_name(node, act_checkpoint, pristine_recording):
    url, sim, _ = node
    result = out(call(url, act_args(act_checkpoint, scene="tatbotlogo", max_steps=3)))
    assert result["success"], result["message"]
    np.testing.assert_allclose(sim.robots[-1].commands[0], READY_POSE, atol=1e-6)


# --- stop, don't clamp forever ----------------------------------------------------------------------------------


def test_a_policy_the_envelope_keeps_correcting_is_stopped(node, wild_checkpoint):
    url, sim, _ = node
    result = out(call(url, act_args(wild_checkpoint, max_steps=30, record_eval=True)))
    assert not result["success"] and result["num_steps"] == 4  # the 5th corrected step is not sent
    assert "had to correct the policy's action 5 steps in a row" in result["stop_reason"]
    assert result["actions_clamped"] >= 4
    assert_parked(sim.robots[-1])
    meta = json.loads((Path(result["eval_dir"]) / "meta" / "vla_eval.json").read_text())
    assert meta["stop_reason"] == result["stop_reason"] and meta["limits"]["max_adjusted_steps"] == 5


def test_arms_that_stop_following_their_commands_stop_the_rollout(node, act_checkpoint):
    url, sim, _ = node
    sim.faults = SimFaults(pushed_joint=8, push_rad=0.5, pushed_from=5)  # observation 1 finds the arms at ready
    result = out(call(url, act_args(act_checkpoint, max_steps=30)))
    assert not result["success"] and result["num_steps"] == 3
    # 0.5 rad off the sim's current target; an async loop observes right after its send, so up to a step's delta less
    assert re.search(r"right\.joint_1\.pos is 0\.(49\d|50\d?) rad", result["stop_reason"]), result["stop_reason"]
    assert "not following" in result["stop_reason"]
    assert result["max_tracking_error_rad"] == pytest.approx(0.5, abs=0.01)
    assert_parked(sim.robots[-1])


def test_arms_that_do_not_reach_ready_never_start_the_policy(node, act_checkpoint):
    url, sim, _ = node
    sim.faults = SimFaults(pushed_joint=8, push_rad=0.5, pushed_from=1)  # held 0.5 rad off whatever it is sent
    result = out(call(url, act_args(act_checkpoint, max_steps=30)))
    assert not result["success"] and result["num_steps"] == 0
    assert "the arms did not reach ready within 1 s" in result["stop_reason"], result["stop_reason"]
    assert "right.joint_1.pos still 0.500 rad away" in result["stop_reason"]
    assert_parked(sim.robots[-1])
    np.testing.assert_array_equal(np.stack(sim.robots[-1].commands), [READY_POSE, READY_POSE])  # no policy action


def test_the_servers_step_cap_clips_a_rollout_up_front(node, act_checkpoint):
    url, sim, _ = node
    progress: list = []
    result = out(call(url, act_args(act_checkpoint, max_steps=1000, fps=20), progress))
    assert result["success"] and result["num_steps"] == 40 and result["stop_reason"] is None, result["message"]
    note = "max_steps 1000 is above this node's step cap: running 40 steps (TATBOT_ROLLOUT_MAX_STEPS on the node)"
    assert progress[0][1] == note and result["message"].startswith(note)
    assert_parked(sim.robots[-1])


def test_the_wall_clock_cap_stops_a_rollout(act_checkpoint, checkpoint_home, tmp_path):
    settings = PipelineSettings(home=checkpoint_home, robot_state_dir=tmp_path,
                                rollout_limits=RolloutLimits(max_seconds=0.5))
    result = vla_infer(VLAInferInput(**act_args(act_checkpoint, max_steps=1000)), settings)
    assert not result.success and result.num_steps < 1000  # stopped by the clock long before its 1000 steps
    assert "reached the server's wall-clock cap (0.5 s" in result.stop_reason


# --- a hung driver call ------------------------------------------------------------------------------------------


def test_a_cancel_that_cannot_park_in_time_abandons_the_rollout_and_frees_the_robot(node, act_checkpoint):
    url, sim, service = node
    sim.faults = SimFaults(hang_at_command=4)  # ready, step 1, step 2, then the driver hangs in step 3's send
    before = len(service.history)

    async def cancel_after_step_2():
        async with mcp_session(url) as session:
            running, on_progress = progress_event("step 2 ")

            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: session.call_tool("vla_infer", act_args(act_checkpoint, max_steps=30),
                                                        progress_callback=on_progress))
                with anyio.fail_after(60):
                    await running.wait()
                tg.cancel_scope.cancel()

    anyio.run(cancel_after_step_2)
    hung = sim.robots[-1]
    deadline = time.monotonic() + 20
    while len(service.history) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    abandoned = service.history[-1]
    assert not abandoned.success and "did not confirm it was parked within 1.5 s" in abandoned.message
    assert "CHECK THE ROBOT BY HAND" in abandoned.message
    sim.faults = SimFaults()
    nxt = out(call(url, act_args(act_checkpoint, max_steps=3)))  # the lock was released
    assert nxt["success"], nxt["message"]
    sent = len(hung.commands)
    finished = len(service.history)
    hung.release_hang()  # the driver call returns: the abandoned rollout must not get another command through
    deadline = time.monotonic() + 20
    while len(service.history) == finished and time.monotonic() < deadline:  # the worker's own output: it ended
        time.sleep(0.05)
    assert len(service.history) == finished + 1, "the abandoned worker never ended"
    assert len(hung.commands) <= sent + 1  # at most the hung command itself lands, nothing after it


# --- the operator arms the robot ---------------------------------------------------------------------------------


@pytest.fixture
def hardware_sim(monkeypatch):
    """The sim, registered as a backend that moves hardware: arming applies to it as to the real arms."""
    robots: list[SimRobot] = []

    def factory(scene, cameras, enable_realsense, settings=None):
        robots.append(SimRobot(cameras=cameras, start=scene.sleep))
        return robots[-1]

    monkeypatch.setitem(backends.BACKENDS, "sim-hw", backends.Backend(factory, moves_hardware=True))
    return robots


def test_hardware_rollouts_run_only_while_the_node_is_armed(act_checkpoint, checkpoint_home, tmp_path, hardware_sim):
    state = tmp_path / "state"
    settings = PipelineSettings(home=checkpoint_home, robot_state_dir=state)
    request = VLAInferInput(**act_args(act_checkpoint, max_steps=3))

    refused = vla_infer(request, settings, backend="sim-hw")
    assert not refused.success and "not armed" in refused.message and "tatbot-pipeline arm --minutes 10" in refused.message
    assert hardware_sim == []

    dry = vla_infer(request.model_copy(update={"dry_run": True}), settings, backend="sim-hw")
    assert dry.success  # a dry run moves nothing, so it needs no arming

    arm(state, minutes=10, by="alice@hog")
    ok = vla_infer(request, settings, backend="sim-hw")
    assert ok.success and ok.armed_by.startswith("armed by alice@hog at ") and "armed by alice@hog" in ok.message
    assert len(hardware_sim) == 1

    arm(state, minutes=10, by="alice@hog", now=time.time() - 3600)  # armed an hour ago for ten minutes
    expired = vla_infer(request, settings, backend="sim-hw")
    assert not expired.success and "not armed" in expired.message and len(hardware_sim) == 1


def test_disarming_stops_a_running_hardware_rollout(act_checkpoint, checkpoint_home, tmp_path, hardware_sim):
    state = tmp_path / "state"
    arm(state, minutes=10, by="alice@hog")
    settings = PipelineSettings(home=checkpoint_home, robot_state_dir=state)

    def progress(fraction, message):
        if message.startswith("step 3 "):
            disarm(state)

    result = vla_infer(VLAInferInput(**act_args(act_checkpoint, max_steps=50)), settings, backend="sim-hw",
                       progress=progress)
    assert not result.success and result.num_steps == 3
    assert "arming expired or was withdrawn" in result.stop_reason
    assert_parked(hardware_sim[-1])


def test_the_arm_command_arms_and_disarms_the_node(tmp_path):
    env = {**os.environ, "TATBOT_ROBOT_STATE_DIR": str(tmp_path)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tatbot_pipeline.cli", "arm", *args], env=env, capture_output=True,
                              text=True)

    assert run("--status").returncode == 1
    armed = run("--minutes", "5")
    assert armed.returncode == 0 and "armed by " in armed.stdout
    assert run("--status").returncode == 0
    assert run("--minutes", "500").returncode == 2
    assert "disarmed" in run("--off").stdout and run("--status").returncode == 1


# --- the smaller problems -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["x", "short-token", "has a space in it!!", "tab\tinside-the-token-x"])
def test_weak_tokens_are_refused(token):
    with pytest.raises(ValueError, match="at least 16 characters with no whitespace"):
        ServerConfig(token=token).check()


def test_a_wrong_token_gets_an_actionable_message(checkpoint_home, act_checkpoint, tmp_path):
    config = ServerConfig(token="the-right-token-0123", checkpoint_roots=(checkpoint_home,),
                          settings=PipelineSettings(home=checkpoint_home, robot_state_dir=tmp_path))
    with running_server(RolloutService(config, factory=FaultySim())) as url:
        for token in (None, "a-wrong-token-45678"):
            with pytest.raises(RobotNodeError) as refused:
                call_vla_infer(url, act_args(act_checkpoint, dry_run=True), token=token)
            assert "401 Unauthorized" in str(refused.value) and "TATBOT_MCP_TOKEN" in str(refused.value)


def test_a_checkpoint_whose_type_and_fields_disagree_gets_one_short_line(node, act_checkpoint, checkpoint_home):
    import shutil

    url, _, _ = node
    odd = checkpoint_home / "outputs" / "train" / "odd" / "pretrained_model"
    if not odd.exists():
        shutil.copytree(act_checkpoint, odd)
        config = json.loads((odd / "config.json").read_text())
        (odd / "config.json").write_text(json.dumps({**config, "type": "smolvla"}))
    result = out(call(url, act_args(odd, policy="smolvla", dry_run=True)))
    assert not result["success"] and len(result["message"]) < 600
    assert "is not a valid LeRobot 'smolvla' policy config" in result["message"]
