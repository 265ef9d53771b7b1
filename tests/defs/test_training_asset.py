"""The Dagster skin of training: a real tiny `trained_policy` materialization, its blocking health checks, and the
wiring of the retraining sensor (the conditions themselves: test_automation.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest

from tatbot_pipeline.defs.resources import PipelineResource
from tatbot_pipeline.defs.training import CHECKS, TRAINING_RETRIES, TRAINING_TAG, run_dir_name, trained_policy
from tatbot_pipeline.scene_yaml import load_scene, secret_values


@pytest.fixture
def home_with_split(pristine_recording: Path, tmp_path: Path) -> Path:
    """<home>/splits/latest -> v7, with train/ = the synthetic camera recording and the split builder's manifest."""
    home = tmp_path / "home"
    version = home / "splits" / "v7"
    shutil.copytree(pristine_recording, version / "train")
    (home / "splits" / "latest").symlink_to("v7", target_is_directory=True)
    manifest = {"version": "v7", "stroke_length": 8, "recordings": [
        {"name": pristine_recording.name, "path": str(pristine_recording), "fingerprint": "fp-123"}]}
    (version / "split.json").write_text(json.dumps(manifest))
    return home


def _materialize(assets, home: Path, steps: int) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={"pipeline": PipelineResource(recordings_dir=str(home / "recordings"), home=str(home))},
        run_config={"ops": {"trained_policy": {"config": {"preset": "tiny_smolvla", "steps": steps}}}},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_materialize_trains_a_loadable_checkpoint_with_lineage(home_with_split: Path, pristine_recording: Path,
                                                             monkeypatch):
    import fcntl

    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from tatbot_pipeline.defs import training

    locked_during_report = []

    def report_while_checking_the_lock(*args, **kwargs):
        """The health checks and validation loss run under the training lock: a queued training waits for them."""
        with open(home_with_split / "outputs" / "train" / ".training.lock", "w") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked_during_report.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
            except BlockingIOError:
                locked_during_report.append(True)
        return report_training(*args, **kwargs)

    report_training = training.report_training
    monkeypatch.setattr(training, "report_training", report_while_checking_the_lock)
    result = _materialize([trained_policy], home_with_split, steps=12)
    assert result.success
    assert locked_during_report == [True]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "loss_decreased": True, "grad_norm_stable": True, "batch_sane": True}, {n: c.description for n, c in checks.items()}

    md = result.asset_materializations_for_node("trained_policy")[0].metadata
    checkpoint = Path(md["checkpoint"].value)
    run_name = f"tiny_smolvla-{result.run_id[:8]}"
    assert checkpoint == home_with_split / "outputs" / "train" / run_name / "checkpoints" / "last" / "pretrained_model"
    assert SmolVLAPolicy.from_pretrained(checkpoint).config.chunk_size == 8
    assert md["policy_type"].value == "smolvla" and md["steps"].value == 12
    assert 0 < md["final_loss"].value < 100
    assert md["split_version"].value == "v7"
    assert md["split_fingerprints"].value == {pristine_recording.name: "fp-123"}
    assert "lerobot 0.6.1" in md["code_version"].value
    assert md["loss_curve"].value.startswith("![loss](data:image/png;base64,")
    assert "--policy.type=smolvla" in Path(md["command"].value).read_text()  # the exact command, runnable
    scene_json = json.dumps(md["scene"].value)
    assert md["scene"].value["design_name"] and not any(s in scene_json for s in secret_values(
        load_scene(pristine_recording / "scene.yaml")))
    # The backbone sits under the home at a stable path (the checkpoint refers to it by absolute path).
    assert (home_with_split / "models" / "tiny_smolvlm" / "config.json").is_file()


def test_definitions_wire_the_sensor_and_job():
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.definitions import build_definitions
    from tatbot_pipeline.defs.placement import gpu_run_tags

    defs = build_definitions(PipelineSettings(train_gpus=2, retrain_cron="0 3 * * 1"))
    sensor = defs.get_sensor_def("training_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert dict(sensor.run_tags) == {  # queue limit, retries of a dead worker's run that resume, GPU node (deploy/)
        TRAINING_TAG: "true", "dagster/max_retries": str(TRAINING_RETRIES), "dagster/retry_strategy": "FROM_FAILURE",
        "dagster/retry_on_asset_or_op_failure": "false", **gpu_run_tags(2)}
    assert dict(defs.resolve_job_def("train_policy_job").tags) == dict(sensor.run_tags)
    assert "0 3 * * 1" in sensor.description
    spec = defs.resolve_assets_def("trained_policy")
    condition = spec.get_asset_spec().automation_condition  # a short name; the cron is in the part that waits for it
    assert condition.get_label() == "Retrain on a new split (cron)"
    assert any("0 3 * * 1" in (part.get_label() or "") for part in condition.operands)
    assert {c.name for c in spec.check_specs} == {"loss_decreased", "grad_norm_stable", "batch_sane"} == set(CHECKS)
    assert all(c.blocking for c in spec.check_specs)


def test_a_retried_run_reuses_its_run_dir():
    first = dg.DagsterRun(job_name="j", run_id="aaaaaaaa-1111")
    retry = dg.DagsterRun(job_name="j", run_id="bbbbbbbb-2222", parent_run_id=first.run_id, root_run_id=first.run_id)
    assert run_dir_name("smolvla", first) == run_dir_name("smolvla", retry) == "smolvla-aaaaaaaa"
    assert run_dir_name("smolvla", dg.DagsterRun(job_name="j", run_id="cccccccc-3333")) == "smolvla-cccccccc"



@dg.asset(deps=[trained_policy])
def policy_promotion() -> None:
    """Stands in for policy_evaluation: must not run after a failed blocking check."""


def _training_job() -> dg.JobDefinition:
    """Module-level so `dg.reconstructable` can rebuild it for the re-execution (home comes from the environment)."""
    job = dg.define_asset_job("retry_test_job", selection=[trained_policy, policy_promotion])
    # In-process, like the code location's executor: a subprocess per step would re-import torch each time.
    defs = dg.Definitions(assets=[trained_policy, policy_promotion], jobs=[job],
                          resources={"pipeline": PipelineResource()}, executor=dg.in_process_executor)
    return defs.resolve_job_def("retry_test_job")


def test_failed_check_blocks_promotion_and_reexecution_resumes(home_with_split: Path, monkeypatch):
    """A 2-step run fails `loss_decreased` (too few points) deterministically: the blocking check stops the
    downstream asset; "re-execute from failure" then lands in the same run dir and resumes from its checkpoint."""
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(home_with_split))
    run_config = {"ops": {"trained_policy": {"config": {"preset": "tiny_smolvla", "steps": 2, "save_freq": 1}}}}
    job = dg.reconstructable(_training_job)
    with dg.instance_for_test() as instance:
        first = dg.execute_job(job, instance, run_config=run_config, raise_on_error=False)
        assert not first.success
        checks = {e.check_name: e for e in first.get_asset_check_evaluations()}
        assert not checks["loss_decreased"].passed and "need 4" in checks["loss_decreased"].description
        assert checks["loss_decreased"].severity == dg.AssetCheckSeverity.ERROR
        assert checks["batch_sane"].passed and checks["grad_norm_stable"].passed
        done = {e.asset_key for e in first.get_asset_materialization_events()}
        assert done == {dg.AssetKey("trained_policy")}, "policy_promotion must not run after a failed blocking check"

        # Pretend the first run died between its step-1 and step-2 checkpoints.
        run_dir = home_with_split / "outputs" / "train" / f"tiny_smolvla-{first.run_id[:8]}"
        checkpoints = run_dir / "checkpoints"
        shutil.rmtree(checkpoints / "000002")
        (checkpoints / "last").unlink()
        (checkpoints / "last").symlink_to("000001", target_is_directory=True)

        retry = dg.execute_job(job, instance, reexecution_options=dg.ReexecutionOptions.from_failure(
            first.run_id, instance), raise_on_error=False)
        assert retry.dagster_run.root_run_id == first.run_id
        md = retry.asset_materializations_for_node("trained_policy")[0].metadata
        assert md["resumed_from_step"].value == 1 and md["steps"].value == 2
        assert Path(md["checkpoint"].value) == checkpoints / "last" / "pretrained_model"
        assert "--resume=true" in Path(md["command"].value).read_text()
        assert (checkpoints / "000002" / "pretrained_model" / "model.safetensors").is_file()
