"""Pipes round trip: Dagster's PipesSubprocessClient runs the external training entry point, which reports the
materialization, the health checks and its log lines back (on the session's tiny run: nothing left to train)."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from tatbot_pipeline.training.pipes import pipes_command, pipes_extras
from tatbot_pipeline.defs.training import CHECKS
from tatbot_pipeline.training.presets import TrainOptions
from tests.training.conftest import STEPS


def test_pipes_subprocess_reports_the_training_back(trained_run, train_split: Path, train_home: Path, tmp_path: Path):
    run, _ = trained_run
    run_dir = tmp_path / "outputs" / "train" / "remote"
    shutil.copytree(run.run_dir, run_dir)
    extras = pipes_extras("tiny_smolvla", train_split, run_dir, train_home / "hf", TrainOptions(steps=STEPS),
                          models_home=train_home)

    @dg.asset(name="trained_policy", check_specs=[dg.AssetCheckSpec(c, asset="trained_policy") for c in CHECKS])
    def remote_trained_policy(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        return pipes.run(command=pipes_command(), context=context, extras=extras).get_materialize_result()

    with dg.instance_for_test() as instance:
        result = dg.materialize([remote_trained_policy], resources={"pipes": dg.PipesSubprocessClient()},
                                instance=instance)
        assert result.success
        [mat] = result.get_asset_materialization_events()
        meta = mat.materialization.metadata
        assert meta["summary"].value.startswith(f"tiny_smolvla, {STEPS} steps (resumed at {STEPS})")
        assert meta["steps"].value == STEPS and meta["preset"].value == "tiny_smolvla"
        # the same lineage as a checkpoint trained on the Dagster host
        for key in ("split_version", "split_fingerprints", "scene", "code_version", "loss_curve", "train_config"):
            assert key in meta, key
        assert meta["checkpoint"].value == str(run_dir / "checkpoints" / "last" / "pretrained_model")
        assert meta["final_loss"].value == pytest.approx(run.metrics.final_loss, rel=1e-3)
        assert meta["command"].value == "not retrained"  # the checkpoint had reached STEPS already
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(checks) == set(CHECKS)
        assert checks["batch_sane"].passed and "message" in checks["batch_sane"].metadata
        logs = " ".join(e.user_message or "" for e in instance.all_logs(result.run_id))
        assert "nothing to train" in logs  # the external process's own line, through Pipes
