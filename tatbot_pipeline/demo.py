"""`tatbot-pipeline demo`: the whole loop on synthetic recordings, recorded in the real Dagster instance.

Runs every step through Dagster (the same sensor, assets and jobs a user triggers from the UI) against
$DAGSTER_HOME, so the UI opened at the end shows the runs, the verdicts and the lineage. Idempotent: a second run
reuses the synthetic recordings and re-materializes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.recordings.report import ValidationReport
from tatbot_pipeline.synth import SynthSpec, make_recordings

# Small enough for 2 CPU cores, real enough to train on: both cameras, 6 strokes of 8 frames per recording, written
# the way the robot node records (tatbot's LeRobot fork, v3.0; the operator moves the needle depth in some strokes).
DEMO_SPEC = SynthSpec(recordings=3, episodes=6, stroke_length=8, image_shape=(96, 128), seed=1)
DEFECTS_SPEC = SynthSpec(recordings=1, episodes=6, stroke_length=8, image_shape=(96, 128), seed=2, design="snail",
                         dead_arm_episodes=(1,), black_camera_episodes=(4,))
# From the archive: recorded in August 2025 by the fork's LeRobot v2.1 era; validation converts a copy, and the
# split trains on it with the others.
ARCHIVE_SPEC = SynthSpec(recordings=1, episodes=6, stroke_length=8, image_shape=(96, 128), seed=4, format="v2.1",
                         scene="tatbotlogo", design="tatbotlogo")
# A session stopped after 3 of its 6 strokes, in the middle of stroke 4: the fork leaves a complete 3-episode dataset.
STOPPED_SPEC = SynthSpec(recordings=1, episodes=6, stroke_length=8, image_shape=(96, 128), seed=5, saved_episodes=3)


# Step-by-step event logs live in the UI; the console shows warnings and the demo's own progress.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
PROGRESS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # the step's own log lines (training progress)


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    print(f"    {what} ({time.perf_counter() - t0:.1f} s)", flush=True)


def make_demo_recordings(root: Path) -> list[Path]:
    """Recordings as the robot node leaves them, from two eras, some with the recorder's silent failures."""
    existing = sorted(p for p in root.glob("stroke-*") if p.is_dir()) if root.exists() else []
    if existing:
        print(f"    reusing {len(existing)} synthetic recordings in {root}")
        return existing
    paths = make_recordings(root, DEMO_SPEC, progress=True)
    paths += make_recordings(root, DEFECTS_SPEC, progress=True)
    paths += make_recordings(root, ARCHIVE_SPEC, progress=True)
    [stopped] = make_recordings(root, STOPPED_SPEC, progress=True)
    (stopped / "episode_000003").mkdir()  # stroke_tool makes a stroke's dir before recording it
    # Upstream lerobot 0.4.4 (not the fork) crashed before finalize(): no episodes table, untouched for an hour.
    [crashed] = make_recordings(root, SynthSpec(episodes=2, stroke_length=8, cameras=False, seed=3, scene="crashed",
                                                format="lerobot"))
    shutil.rmtree(crashed / "meta" / "episodes")
    old = time.time() - 3600
    for p in [crashed, *crashed.rglob("*")]:
        os.utime(p, (old, old))
    return [*paths, stopped, crashed]


def ingest(instance, settings: PipelineSettings) -> None:
    """One tick of the recordings sensor, applied as the daemon would, then the runs it requested."""
    import dagster as dg

    from tatbot_pipeline.defs.ingestion import recording_validation, recordings_sensor, stroke_recording
    from tatbot_pipeline.defs.resources import PipelineResource

    resource = PipelineResource(settle_seconds=0.0)
    result = recordings_sensor(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        run = dg.materialize(
            [stroke_recording, recording_validation],
            partition_key=request.partition_key,
            resources={"pipeline": resource},
            instance=instance,
            tags={"dagster/sensor_name": "recordings_sensor", "demo": "true"},
            run_config=QUIET,
            raise_on_error=False,
        )
        verdict = ValidationReport.load(settings.report_path(request.partition_key))
        print(f"    {verdict.status.value.upper():10s} {request.partition_key}  "
              f"{len(verdict.episodes_usable)}/{verdict.episodes_total} episodes usable"
              + ("  (LeRobot v2.1: validated and split through its converted copy)" if "converted_from" in verdict.summary else "")
              + ("" if run.success else "  (blocking check failed: run marked failed, nothing downstream uses it)"))


# A tiny model learns enough in a few hundred CPU steps to draw a falling loss curve; the demo's gate is set for it.
DEMO_TRAIN_STEPS = 200
# Its latency budget is loose too: on a busy 2-core machine a CPU forward pass can take a few hundred ms.
DEMO_GATE = {"max_mae": 0.5, "max_joint_mae": 1.0, "latency_budget_ms": 2000.0}


def _materialize(instance, asset, config: dict | None = None, progress: bool = False) -> dict:
    """Materialize one asset in the real instance; return its metadata as plain values. Failing steps raise."""
    import dagster as dg

    from tatbot_pipeline.defs.resources import PipelineResource

    run_config = {"ops": {asset.op.name: {"config": config}}} if config else {}
    run_config.update(PROGRESS if progress else QUIET)
    result = dg.materialize([asset], instance=instance, resources={"pipeline": PipelineResource()},
                            run_config=run_config, tags={"demo": "true"})
    [mat] = result.get_asset_materialization_events()
    return {k: v.value for k, v in mat.materialization.metadata.items()}


def _robot_eval(instance) -> str:
    from tatbot_pipeline.definitions import defs

    job = defs.get_job_def("robot_eval")
    config = {"ops": {"resolve_checkpoint": {"config": {"device": "cpu", "max_steps": 40}}}}
    result = job.execute_in_process(run_config={**config, **PROGRESS}, instance=instance, tags={"demo": "true"})
    return result.output_for_node("register_eval_dataset")


def watch_the_loop(demo_root: Path) -> str:
    """The demo's last line: how to see a new recording go through the loop by itself."""
    from tatbot_pipeline.defs.automation import RETRAIN_CRON

    return (f"\nWatch the loop: with the UI running, add a recording (tatbot-pipeline synth {demo_root} --cameras "
            f"--episodes 6 --stroke-length 8 --image-shape 96 128 --seed 4); it is validated, split, retrained at the "
            f"next tick of TATBOT_RETRAIN_CRON ({RETRAIN_CRON}; TATBOT_RETRAIN_CRON='* * * * *' make demo for every "
            "minute) and evaluated, with no click (UI: Runs).")


def run_demo(ui: bool = True, port: int = 3000) -> int:
    if not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set — run `source .venv/bin/activate` (scripts/setup.sh adds it) or use "
              "`make demo`", file=sys.stderr)
        return 2
    settings = PipelineSettings.from_env()
    demo_root = settings.home / "demo" / "recordings"
    # The demo never touches the real recordings root: it points the pipeline at its own synthetic one.
    os.environ["TATBOT_RECORDINGS_DIR"] = str(demo_root)
    settings = PipelineSettings.from_env()
    started = time.perf_counter()

    import dagster as dg

    instance = dg.DagsterInstance.get()

    t0 = _step(f"1/6 synthetic recordings (as tatbot's stroke_tool writes them: fork v3.0, one v2.1) in {demo_root}")
    make_demo_recordings(demo_root)
    _done(t0, "recordings ready")

    t0 = _step("2/6 sensor + ingestion: stroke_recording, recording_validation")
    ingest(instance, settings)
    _done(t0, "ingested")

    from tatbot_pipeline.defs.evaluation import policy_evaluation
    from tatbot_pipeline.defs.splits import training_splits
    from tatbot_pipeline.defs.training import trained_policy

    t0 = _step("3/6 training_splits: usable episodes -> train/val LeRobot datasets")
    split = _materialize(instance, training_splits)
    _done(t0, f"train {split['train_episodes']} / val {split['val_episodes']} episodes at {split['path']}")

    t0 = _step(f"4/6 trained_policy: lerobot-train, preset tiny_smolvla, {DEMO_TRAIN_STEPS} steps on CPU")
    trained = _materialize(instance, trained_policy, {"preset": "tiny_smolvla", "steps": DEMO_TRAIN_STEPS}, progress=True)
    _done(t0, f"checkpoint {trained['checkpoint']} (final loss {trained['final_loss']:.3f})")

    t0 = _step("5/6 policy_evaluation: open-loop replay of the val split + promotion gate")
    evaluation = _materialize(instance, policy_evaluation, DEMO_GATE)
    _done(t0, f"MAE {evaluation['mae_rad']:.3f} rad, p95 latency {evaluation['latency_p95_ms']:.1f} ms, "
              f"promoted: {evaluation['promoted']}")
    if not evaluation["promoted"]:
        print(f"error: the checkpoint was not promoted:\n{evaluation['gate']}\nrobot_eval rolls out the promoted "
              "checkpoint only; see policy_evaluation in the UI", file=sys.stderr)
        return 1

    t0 = _step("6/6 robot_eval job: deploy the promoted checkpoint, vla_infer on the sim robot over MCP")
    rollout = _robot_eval(instance)
    _done(t0, rollout)

    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Where to look:")
    print(f"  recordings:         {demo_root}")
    print(f"  validation reports: {settings.validation_dir}")
    print(f"  splits:             {settings.splits_dir / 'latest'}")
    print(f"  checkpoint:         {trained['checkpoint']}")
    print(f"  eval dataset:       {rollout}")
    print(f"  Dagster instance:   {os.environ['DAGSTER_HOME']}")
    if not ui:
        print(watch_the_loop(demo_root))
        return 0
    print(f"\nStarting the Dagster UI: http://127.0.0.1:{port}  (Ctrl-C to stop)", flush=True)
    print(watch_the_loop(demo_root), flush=True)
    dagster = Path(sys.executable).parent / "dagster"
    # workspace.yaml names the code location; DAGSTER_MODULE_NAME (exported for `dagster job execute`) hangs `dagster dev`.
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_MODULE_NAME"}
    return subprocess.call([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)], env=env)
