"""`robot_eval` end to end against the embedded sim node: in-process, and as users run it from the repo root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.definitions import build_definitions
from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.robot import RobotNode, robot_eval
from tatbot_pipeline.digest import checkpoint_sha256

# What the code location loads (definitions.defs), from this process's settings.
defs = build_definitions(PipelineSettings.from_env())

REPO = Path(__file__).resolve().parents[2]
# What sim_evaluation adds to the promoted checkpoint's record when its sim gate passed.
SIMULATED = {"passed": True, "strokes": 8, "tip_error_mm_p95": 1.2, "reasons": []}


@pytest.fixture(scope="module")
def home(tmp_path_factory, pristine_recording: Path) -> Path:
    """A pipeline home with a tiny SmolVLA checkpoint promoted, as policy_evaluation leaves it."""
    from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

    home = tmp_path_factory.mktemp("home")
    ckpt = save_tiny_smolvla_checkpoint(home / "outputs/train/tiny-1/checkpoints/last/pretrained_model", pristine_recording)
    (home / "promoted.json").write_text(json.dumps({"checkpoint": str(ckpt), "mae": 0.1, "sim": SIMULATED}))
    return home


def _run(instance, home: Path, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return robot_eval.execute_in_process(
        instance=instance, raise_on_error=False,
        resources={"pipeline": PipelineResource(home=str(home), recordings_dir=str(home / "none")), "robot_node": RobotNode()},
        run_config={"ops": {"resolve_checkpoint": {"config": {"device": "cpu", "max_steps": 12, **(config or {})}}}},
    )


def test_rollout_of_the_promoted_checkpoint_becomes_an_eval_dataset_partition(home: Path):
    with dg.instance_for_test() as instance:
        result = _run(instance, home)
        assert result.success
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("eval_dataset")]
        partition = mat.materialization.partition
        assert partition.startswith("vla-eval-default-")
        assert instance.get_dynamic_partitions("eval_runs") == [partition]
        meta = mat.materialization.metadata
        # No mcp_url: the embedded sim node ran it, and says so (not the configured name, hog, never contacted).
        assert list(meta)[0] == "summary" and meta["summary"].value.startswith(
            "OK — 12/12 steps of tiny-1-last on embedded sim node, sim backend, scene default; ")
        assert meta["success"].value is True and meta["steps"].value == 12 and meta["max_steps"].value == 12
        assert isinstance(meta["actions_clamped"].value, int) and isinstance(meta["rate_limited"].value, int)
        assert 0 <= meta["tracking_err_rad"].value < 0.35
        assert meta["node"].value == "embedded sim node" and meta["backend"].value == "sim"
        assert meta["checkpoint"].value.endswith("pretrained_model") and meta["armed_by"].value == "not needed (sim backend)"
        assert meta["cmd_vs_observed"].value.startswith("![commanded vs observed](data:image/png")
        assert max(len(key) for key in meta) <= 18  # the asset overview's table keeps room for the digest
        assert str(home) not in meta["message"].value and "…/" in meta["message"].value  # whole in `checkpoint`
        digest = checkpoint_sha256(Path(meta["checkpoint"].value))
        assert mat.materialization.tags == {"tatbot/robot": "embedded_sim_node", "tatbot/scene": "default",
                                            "tatbot/checkpoint": "1-last", "tatbot/checkpoint_sha256": digest[:12],
                                            "tatbot/evaluated": "yes", "tatbot/simulated": "yes"}
        assert meta["checkpoint_sha256"].value == digest  # lineage by content: the bytes the node loaded
        assert json.loads((Path(meta["path"].value) / "meta" / "vla_eval.json").read_text())["checkpoint_sha256"] == digest
        # Short enough for a Runs-list chip: the training run's id and the step (the preset is on the page).
        assert instance.get_run_by_id(result.run_id).tags["tatbot/checkpoint"] == "1-last"
        [check] = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        evaluation = check.event_specific_data
        assert evaluation.check_name == "rollout_quality" and evaluation.partition == partition
        assert evaluation.description.startswith(partition)
        ds = LeRobotDataset("local/eval", root=meta["path"].value, video_backend="pyav")
        assert ds.num_frames == 12
        assert (home / "deployed" / "tiny-1-last" / "model.safetensors").exists()
        logs = "".join(e.user_message for e in instance.all_logs(result.run_id))
        assert "[embedded sim node" in logs and "step" in logs  # progress streamed from the node into the run log


def test_eval_dataset_lineage_reaches_the_recordings():
    graph = defs.resolve_asset_graph()
    chain, key = [], dg.AssetKey("eval_dataset")
    while True:
        chain.append(key.path[-1])
        parents = graph.get(key).parent_keys
        if not parents:
            break
        key = sorted(parents)[0]
    assert chain == ["eval_dataset", "sim_evaluation", "policy_evaluation", "trained_policy", "training_splits",
                     "recording_validation", "stroke_recording"]


def test_bad_checkpoint_fails_before_anything_moves(home: Path, tmp_path: Path):
    with dg.instance_for_test() as instance:
        result = _run(instance, home, {"checkpoint": str(tmp_path / "nope")})
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "check_checkpoint_op"
        assert "does not exist" in failure.step_failure_data.error.message
        executed = {e.step_key for e in result.all_events if e.is_step_start}
        assert "deploy_checkpoint" not in executed and "run_vla_infer" not in executed


def test_failed_rollout_fails_the_run_with_the_tools_message(home: Path, pristine_recording: Path):
    """A policy gone bad (NaN actions): refused before the robot connects; the run fails with the tool's message and
    registers no eval dataset (nothing was recorded)."""
    from tests.inference.checkpoints import poison_with_nan, save_tiny_act_checkpoint

    act = save_tiny_act_checkpoint(home / "outputs/train/act-ok/checkpoints/last/pretrained_model", pristine_recording)
    bad = poison_with_nan(act, home / "outputs/train/act-nan/checkpoints/last/pretrained_model")
    with dg.instance_for_test() as instance:
        result = _run(instance, home, {"checkpoint": str(bad), "max_steps": 5, "allow_unsimulated": True})
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "register_eval_dataset"
        message = failure.step_failure_data.error.message
        assert "rollout failed on embedded sim node" in message and "non-finite action" in message
        assert "refused before connecting to the robot" in message
        assert instance.get_dynamic_partitions("eval_runs") == []
        assert instance.get_run_by_id(result.run_id).tags["tatbot/rollout"] == "FAILED"  # said in the Runs list


def test_dagster_job_execute_from_the_repo_root(home: Path, tmp_path: Path):
    """The bare command users type, with the environment `source .venv/bin/activate` sets up."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    config = tmp_path / "config.yaml"
    config.write_text("ops:\n  resolve_checkpoint:\n    config:\n      device: cpu\n      max_steps: 8\n")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "DAGSTER_MODULE_NAME": "tatbot_pipeline.definitions",
           "TATBOT_PIPELINE_HOME": str(home), "TATBOT_RECORDINGS_DIR": str(tmp_path / "rec")}
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(dagster), "job", "execute", "-j", "robot_eval", "-c", str(config)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
        assert run.job_name == "robot_eval" and run.status == dg.DagsterRunStatus.SUCCESS
        assert len(instance.get_dynamic_partitions("eval_runs")) == 1


def test_checkpoint_slower_than_its_budget_is_refused(home: Path, tmp_path: Path):
    """The leaderboard says this checkpoint needs 250 ms per action on cpu; at 10 Hz the budget is 100 ms."""
    import shutil

    slow_home = tmp_path / "home"
    shutil.copytree(home, slow_home)
    ckpt = str(slow_home / "outputs/train/tiny-1/checkpoints/last/pretrained_model")
    board = slow_home / "outputs/eval/leaderboard.json"
    board.parent.mkdir(parents=True, exist_ok=True)
    board.write_text(json.dumps([{"checkpoint": ckpt, "latency_p95_ms": 250.0, "device": "cpu",
                                  "thresholds": {"latency_budget_s": 0.0}, "sim": SIMULATED}]))
    with dg.instance_for_test() as instance:
        result = _run(instance, slow_home, {"checkpoint": ckpt})
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "check_checkpoint_op"
        assert "p95 latency 250.0 ms measured on cpu exceeds the 100 ms budget" in failure.step_failure_data.error.message


@pytest.mark.parametrize("chunk_p95_ms, outcome", [(60.0, "async"), (900.0, "refused")])
def test_the_rollout_runs_in_the_mode_the_gate_assumed(home: Path, tmp_path: Path, chunk_p95_ms, outcome):
    """policy_evaluation measured the chunk latency on cpu: 60 ms at 10 Hz is async's (a quarter period and more);
    900 ms is beyond what async can hide with 8-step chunks (3 periods), so the job refuses before anything moves."""
    import shutil

    evaluated = tmp_path / "home"
    shutil.copytree(home, evaluated)
    ckpt = str(evaluated / "outputs/train/tiny-1/checkpoints/last/pretrained_model")
    board = evaluated / "outputs/eval/leaderboard.json"
    board.parent.mkdir(parents=True, exist_ok=True)
    board.write_text(json.dumps([{"checkpoint": ckpt, "chunk_latency_p95_ms": chunk_p95_ms, "device": "cpu",
                                  "n_action_steps": 8, "thresholds": {"latency_budget_s": 0.0}, "sim": SIMULATED}]))
    with dg.instance_for_test() as instance:
        result = _run(instance, evaluated, {"checkpoint": ckpt, "max_steps": 6})
        if outcome == "refused":
            failure = next(e for e in result.all_events if e.is_step_failure)
            assert failure.step_key == "check_checkpoint_op"
            assert ("p95 chunk latency 900.0 ms on cpu > budget 300.0 ms assuming async inference"
                    in failure.step_failure_data.error.message)
            return
        assert result.success
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("eval_dataset")]
        meta = json.loads((Path(mat.materialization.metadata["path"].value) / "meta" / "vla_eval.json").read_text())
        assert meta["inference"] == "async" and "measured by" in meta["inference_choice"]


def test_robot_eval_queues_per_configured_node():
    """Two nodes, two code locations' settings: each job's run tag (dagster.yaml's one-rollout-per-robot limit) and
    launchpad default follow TATBOT_ROBOT_NODE, so a second robot does not queue behind hog."""
    ook = build_definitions(PipelineSettings(robot_node="ook"))
    assert ook.resolve_job_def("robot_eval").tags["robot"] == "ook"
    assert ook.resources["robot_node"].name == "ook"
    assert defs.resolve_job_def("robot_eval").tags["robot"] == PipelineSettings.from_env().robot_node


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def promoted_home(home: Path, tmp_path: Path) -> Path:
    """A copy of the home whose promoted.json and leaderboard carry the checkpoint's digest, as policy_evaluation
    writes them, with the chunk latency it measured on cpu."""
    import shutil

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    ckpt = copy / "outputs/train/tiny-1/checkpoints/last/pretrained_model"
    entry = {"checkpoint": str(ckpt), "checkpoint_sha256": checkpoint_sha256(ckpt), "mae": 0.1, "promoted": True,
             "evaluated_at": "2026-12-04T10:00:00+00:00", "chunk_latency_p95_ms": 1.0, "device": "cpu",
             "n_action_steps": 8, "thresholds": {"latency_budget_s": 0.0}, "split_version": "abc123",
             "train_run": "run-1", "sim": SIMULATED}
    (copy / "promoted.json").write_text(json.dumps(entry))
    (copy / "outputs/eval").mkdir(parents=True, exist_ok=True)
    (copy / "outputs/eval/leaderboard.json").write_text(json.dumps([entry]))
    return copy


def test_a_checkpoint_changed_since_it_was_promoted_is_refused(promoted_home: Path):
    _flip_a_byte(promoted_home / "outputs/train/tiny-1/checkpoints/last/pretrained_model/model.safetensors")
    with dg.instance_for_test() as instance:
        result = _run(instance, promoted_home)
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "check_checkpoint_op"
        assert "changed since it was evaluated" in failure.step_failure_data.error.message
        assert "deploy_checkpoint" not in {e.step_key for e in result.all_events if e.is_step_start}  # before deploy


def test_the_deployed_copy_is_the_evaluated_one_and_looked_up_by_digest(promoted_home: Path):
    """The node loads <home>/deployed/tiny-1-last, a path the leaderboard never saw: it finds the evaluation by
    digest, so the inference mode follows policy_evaluation's latency, not the warm-up's."""
    with dg.instance_for_test() as instance:
        result = _run(instance, promoted_home, {"max_steps": 4})
        assert result.success
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("eval_dataset")]
        meta = mat.materialization.metadata
        eval_meta = json.loads((Path(meta["path"].value) / "meta" / "vla_eval.json").read_text())
    assert "measured by policy_evaluation" in eval_meta["inference_choice"], eval_meta["inference_choice"]
    assert meta["evaluated"].value.startswith("evaluated 2026-12-04T10:00:00+00:00, MAE 0.1 rad, promoted")
    assert meta["split_version"].value == "abc123" and meta["train_run"].value == "run-1"


def test_a_tampered_deployed_copy_is_refused_by_the_deployer_and_the_node(promoted_home: Path):
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.digest import DigestMismatch
    from tatbot_pipeline.inference.delivery import deploy_local
    from tatbot_pipeline.inference.rollout import VLAInferInput, vla_infer

    ckpt = promoted_home / "outputs/train/tiny-1/checkpoints/last/pretrained_model"
    digest = checkpoint_sha256(ckpt)
    copy = deploy_local(ckpt, promoted_home / "deployed", digest)
    _flip_a_byte(copy / "model.safetensors")  # a half-synced NFS copy, a disk error
    settings = PipelineSettings(home=promoted_home, robot_state_dir=promoted_home / "state")
    out = vla_infer(VLAInferInput(policy="smolvla", checkpoint_path=str(copy), device="cpu", max_steps=3,
                                  checkpoint_sha256=digest), settings)
    assert not out.success and "changed since it was evaluated" in out.message and out.num_steps == 0
    with pytest.raises(DigestMismatch, match="deployed copy"):
        deploy_local(copy, promoted_home / "deployed-again", "0" * 64)


def test_an_unsimulated_checkpoint_is_refused_and_the_override_is_recorded(home: Path, pristine_recording: Path):
    from tests.inference.checkpoints import save_tiny_act_checkpoint

    act = save_tiny_act_checkpoint(home / "outputs/train/act-new/checkpoints/last/pretrained_model", pristine_recording)
    with dg.instance_for_test() as instance:
        refused = _run(instance, home, {"checkpoint": str(act), "max_steps": 4})
        failure = next(e for e in refused.all_events if e.is_step_failure)
        assert failure.step_key == "check_checkpoint_op"
        assert "has no passing sim_evaluation" in failure.step_failure_data.error.message
        assert "allow_unsimulated: true" in failure.step_failure_data.error.message
        result = _run(instance, home, {"checkpoint": str(act), "max_steps": 4, "allow_unsimulated": True})
        assert result.success
        assert instance.get_run_by_id(result.run_id).tags["tatbot/simulated"] == "no-allow_unsimulated"
        [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey("eval_dataset")]
    meta = mat.materialization.metadata
    assert "(NOT EVALUATED)" in meta["summary"].value
    assert meta["evaluated"].value.startswith("NOT EVALUATED")
    assert meta["simulated"].value == "NOT SIMULATED (no sim_evaluation): rolled out with allow_unsimulated"
    assert "(NOT SIMULATED)" in meta["summary"].value
    assert meta["checkpoint_sha256"].value == checkpoint_sha256(act)
    assert mat.materialization.tags["tatbot/evaluated"] == "no"
