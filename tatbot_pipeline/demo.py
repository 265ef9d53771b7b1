"""`tatbot-pipeline demo`: the whole loop on synthetic recordings, recorded in the real Dagster instance.

Runs every step through Dagster (the same sensor, assets and jobs a user triggers from the UI) against
$DAGSTER_HOME. Each run is created against the code location `dagster dev` serves (workspace.yaml's
`tatbot_pipeline`), as a click on Materialize would, and executed in this process: the UI opened at the end shows
the runs on the Overview timeline and the Jobs page, the verdicts and the lineage. The demo's settings go to
`.tatbot.env` in the working directory (config.py: SETTINGS_FILE), which the project reads for what the shell does
not export, so a later `dagster dev` there sees the same recordings and home. Idempotent: a second run reuses the
synthetic recordings and re-materializes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tatbot_pipeline.config import PipelineSettings, saved_settings, settings_file
from tatbot_pipeline.console import Console, quiet_console, report_progress
from tatbot_pipeline.recordings.validation_report import ValidationReport
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


# Step-by-step event logs live in the UI (and the demo's log file); the terminal shows the demo's own lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def make_demo_recordings(root: Path) -> list[Path]:
    """Recordings as the robot node leaves them, from two eras, some with the recorder's silent failures."""
    existing = sorted(p for p in root.glob("stroke-*") if p.is_dir()) if root.exists() else []
    if existing:
        print(f"    reusing {len(existing)} synthetic recordings in {root}")
        return existing
    specs = (DEMO_SPEC, DEFECTS_SPEC, ARCHIVE_SPEC, STOPPED_SPEC)
    total = sum(spec.recordings for spec in specs) + 1
    paths: list[Path] = []
    for spec in specs:
        paths += make_recordings(root, spec)
        report_progress("recordings", len(paths), total)
    stopped = paths.pop()
    (stopped / "episode_000003").mkdir()  # stroke_tool makes a stroke's dir before recording it
    # Upstream lerobot 0.4.4 (not the fork) crashed before finalize(): no episodes table, untouched for an hour.
    [crashed] = make_recordings(root, SynthSpec(episodes=2, stroke_length=8, cameras=False, seed=3, scene="crashed",
                                                format="lerobot"))
    shutil.rmtree(crashed / "meta" / "episodes")
    old = time.time() - 3600
    for p in [crashed, *crashed.rglob("*")]:
        os.utime(p, (old, old))
    return [*paths, stopped, crashed]


def clip(text: str, width: int) -> str:
    """One terminal line: cut at a word with an ellipsis, never mid-word."""
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + " …"


def ingest(runs: "LinkedRuns", settings: PipelineSettings, console: Console) -> None:
    """One tick of the recordings sensor, applied as the daemon would, then the runs it requested (tagged with the
    sensor and its run keys, so the daemon of a later `dagster dev` sees them as done and does not ingest again)."""
    import dagster as dg

    from tatbot_pipeline.defs.ingestion import recordings_sensor
    from tatbot_pipeline.defs.resources import PipelineResource

    instance = runs.instance
    resource = PipelineResource.of(settings, settle_seconds=0.0)
    result = recordings_sensor(dg.build_sensor_context(instance=instance, resources={"pipeline": resource}))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for n, request in enumerate(result.run_requests, 1):
        runs.execute(
            "ingest_recordings", partition_key=request.partition_key,
            run_config={"resources": {"pipeline": {"config": pipeline_config(settings, settle_seconds=0.0)}}, **QUIET},
            tags={"dagster/sensor_name": "recordings_sensor", "dagster/run_key": request.run_key, "demo": "true"},
        )
        report_progress("ingestion", n, len(result.run_requests))
        verdict = ValidationReport.load(settings.report_path(request.partition_key))
        converted = "  (LeRobot v2.1: through its converted copy)" if "converted_from" in verdict.summary else ""
        console.line(f"    {request.partition_key}  {clip(verdict.headline(), 100)}{converted}")


# A tiny model learns enough in a few hundred CPU steps to draw a falling loss curve; the demo's gate is set for it.
DEMO_TRAIN_STEPS = 200
# Its latency budget is loose too: on a busy 2-core machine a CPU forward pass can take a few hundred ms.
DEMO_GATE = {"max_mae": 0.5, "max_joint_mae": 1.0, "latency_budget_ms": 2000.0, "gate_name": "the demo's relaxed gate"}
# The sim gate relaxed the same way, and said so: 200 CPU steps of a tiny model draw its strokes tens of mm off the
# expert's path (a real checkpoint is held to TATBOT_SIM_GATE_*: 4 mm per stroke, 3 mm p95, 2 N, no stop, which the
# expert's own replay passes). The step prints, and sim_evaluation's metadata shows, what the lab's gate said of the
# same strokes beside it. 6 of the 7 held-out strokes.
DEMO_SIM_GATE = {"episodes": 6, "tip_deviation_mm": 100.0, "max_tip_error_p95_mm": 100.0, "max_contact_force_n": 100.0,
                 "max_stops": 6, "gate_name": "the demo's relaxed gate"}


def pipeline_config(settings: PipelineSettings, **fields) -> dict:
    """The `pipeline` resource's run config: the demo's paths, given to every run rather than through os.environ."""
    return {"recordings_dir": str(settings.recordings_dir), "home": str(settings.home), **fields}


class StepFailed(Exception):
    """A demo run failed: the demo stops with its message (the run's events are in the UI and the log)."""


# workspace.yaml's location name: runs created against it link to the jobs and assets `dagster dev` serves.
CODE_LOCATION = "tatbot_pipeline"


class LinkedRuns:
    """Runs of the code location's jobs, created in the instance against the location (their origin is the one
    `dagster dev` loads, so the UI's timeline, job and asset pages link them) and executed in this process, quietly.

    Dagster 1.13 has no public call for this: `execute_in_process` and `dagster job execute` leave a run's origin
    empty (unlinked), and `dagster job launch` starts a process per run that imports torch and lerobot again. So this
    does what `dagster job launch` does to create the run (dagster/_cli/job.py) and what `execute_job` does to run it.
    """

    def __init__(self, instance, location) -> None:
        self.instance, self.location = instance, location

    def execute(self, job_name: str, run_config: dict, tags: dict[str, str], partition_key: str | None = None):
        from dagster._utils.hosted_user_process import recon_job_from_origin
        from dagster._core.execution.api import execute_run

        [repository] = self.location.get_repositories().values()
        remote_job = repository.get_full_job(job_name)
        job = recon_job_from_origin(remote_job.get_python_origin())
        job_def = job.get_definition()
        if partition_key is not None:
            tags = {**tags, **job_def.get_tags_for_partition_key(partition_key, selected_asset_keys=None)}
        run = self.instance.create_run_for_job(
            job_def, run_config=run_config, tags={**remote_job.tags, **tags},
            remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
        return execute_run(job, run, self.instance)


@contextlib.contextmanager
def linked_runs(instance) -> Iterator[LinkedRuns]:
    """The code location of workspace.yaml (`python_module: tatbot_pipeline.definitions`), loaded in this process."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="tatbot_pipeline.definitions",
                             working_directory=os.getcwd()), location_name=CODE_LOCATION)
    with origin.create_location(instance) as location:
        yield LinkedRuns(instance, location)


def run_job(runs: LinkedRuns, name: str, op_config: dict | None = None,
            settings: PipelineSettings | None = None) -> dict:
    """Run one of the code location's named jobs in the real instance; return the materialization's metadata as plain
    values (the last asset materialized). Failing steps raise."""
    run_config = {"ops": {op: {"config": cfg} for op, cfg in (op_config or {}).items()}, **QUIET}
    if settings is not None:
        run_config["resources"] = {"pipeline": {"config": pipeline_config(settings)}}
    result = runs.execute(name, run_config, tags={"demo": "true"})
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        raise StepFailed(f"{name} failed: {failure.step_failure_data.error.message.strip() if failure else '?'}")
    events = result.get_asset_materialization_events()
    return {k: v.value for k, v in events[-1].materialization.metadata.items()} if events else {}


def save_settings(settings: PipelineSettings, directory: Path, temp_dir: Path | None = None) -> tuple[Path, list[str]]:
    """Save the demo's recordings and home, and every TATBOT_* the shell exports (a secret excepted), to
    `directory/.tatbot.env` (config.py: settings_file; other lines kept), so a plain `dagster dev` there afterwards
    sees what the demo built. The project reads that file only for what the shell does not export.

    Also moves the TATBOT_* lines an older demo wrote to `directory/.env` (which Dagster applies over the shell) into
    it. A path under the system temp dir (`temp_dir`) is not saved unless the file is under it too: a lasting file
    must not name a dir the system may delete. Returns the file and what to tell the user."""
    from dotenv import set_key

    path = settings_file(directory)
    notes: list[str] = []
    values = _moved_from_dotenv(Path(directory) / ".env", notes)
    values.update({k: v for k, v in os.environ.items() if k.startswith("TATBOT_") and k not in SECRETS})
    values.update({"TATBOT_RECORDINGS_DIR": str(settings.recordings_dir), "TATBOT_PIPELINE_HOME": str(settings.home)})
    temp_root = Path(temp_dir or tempfile.gettempdir()).resolve()
    temporary = {} if _under(path, temp_root) else {k: v for k, v in values.items() if _names_dir_under(v, temp_root)}
    if temporary:
        earlier = saved_settings(directory)
        kept = [f"{k}={earlier[k]}" for k in temporary if k in earlier]
        notes.append(f"not saved to {path} (under {temp_root}, which the system may empty): "
                     + ", ".join(f"{k}={v}" for k, v in temporary.items())
                     + (f"; it keeps its earlier {', '.join(kept)}" if kept else "")
                     + "; export them again for a later `dagster dev` here")
    for key, value in values.items():
        if key not in temporary:
            path.touch(mode=0o600, exist_ok=True)
            set_key(path, key, value)
    return path, notes


# Never saved by the demo: a bearer token stays where the user put it.
SECRETS = {"TATBOT_MCP_TOKEN"}


def _moved_from_dotenv(dotenv: Path, notes: list[str]) -> dict[str, str]:
    """Take the TATBOT_* lines (a secret excepted) out of an older demo's `.env`, keeping its other lines (the file
    goes when nothing is left); return their values, which are saved below the shell from now on."""
    from dotenv import dotenv_values, unset_key

    if not dotenv.is_file():
        return {}
    moved = {k: v for k, v in dotenv_values(dotenv).items()
             if k.startswith("TATBOT_") and k not in SECRETS and v is not None}
    for key in moved:
        unset_key(dotenv, key)
    if moved:
        left = dotenv.read_text().strip()
        if not left:
            dotenv.unlink()
        notes.append(f"moved {', '.join(moved)} from {dotenv} to {settings_file(dotenv.parent)}: Dagster applies "
                     "`.env` over your shell, `.tatbot.env` only where your shell exports nothing"
                     + (f" ({dotenv} was left empty: removed)" if not left else ""))
    return moved


def _under(path: Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root)


def _names_dir_under(value: str, root: Path) -> bool:
    """Whether a setting's value (a path, or paths joined by os.pathsep) names something under `root`."""
    return any(part.startswith(os.sep) and _under(Path(part), root) for part in value.split(os.pathsep))


def watch_the_loop(demo_root: Path, retrain_cron: str) -> str:
    """The demo's last line: how to see a new recording go through the loop by itself."""
    return (f"\nWatch the loop: with the UI running, add a recording (tatbot-pipeline synth {demo_root} "
            f"--episodes 6 --stroke-length 8 --image-shape 96 128 --seed 4); it is validated, split, retrained at the "
            f"next tick of TATBOT_RETRAIN_CRON ({retrain_cron}; TATBOT_RETRAIN_CRON='* * * * *' make demo for every "
            "minute) and evaluated, with no click (UI: Runs).")


def run_demo(ui: bool = True, port: int = 3000) -> int:
    if not os.environ.get("DAGSTER_HOME"):
        print("error: DAGSTER_HOME is not set — run `source .venv/bin/activate` (scripts/setup.sh adds it) or use "
              "`make demo`", file=sys.stderr)
        return 2
    home = PipelineSettings.from_env().home
    # The demo never touches the real recordings root: it points the pipeline at its own synthetic one, in the
    # `pipeline` resource config it hands to every run (the code location it loads reads only its crons and node
    # from the environment), in the environment of the `dagster dev` it starts, and in `.tatbot.env` for a later one.
    settings = PipelineSettings.from_env(recordings_dir=home / "demo" / "recordings")
    saved, notes = save_settings(settings, Path.cwd())
    for note in notes:
        print(note)
    log_path = settings.logs_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        with quiet_console(log_path) as console:
            code = _demo_steps(settings, console, saved)
    except StepFailed as e:
        print(f"error: {e}\n  full log: {log_path}", file=sys.stderr)
        return 1
    if code != 0:
        return code
    if not ui:
        return 0
    print(f"\nStarting the Dagster UI: http://127.0.0.1:{port}  (Ctrl-C to stop)", flush=True)
    dagster = Path(sys.executable).parent / "dagster"
    # workspace.yaml names the code location; DAGSTER_MODULE_NAME (exported for `dagster job execute`) hangs `dagster dev`.
    # The demo's paths are given, not left to .tatbot.env: the shell's exports would win there, and a temporary
    # home is not saved.
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_MODULE_NAME"}
    env.update(TATBOT_RECORDINGS_DIR=str(settings.recordings_dir), TATBOT_PIPELINE_HOME=str(settings.home))
    return subprocess.call([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)], env=env)


def _demo_steps(settings: PipelineSettings, console: Console, saved: Path) -> int:
    """The seven steps, one headline each; returns the exit code."""
    import dagster as dg

    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance, linked_runs(instance) as runs:
        code, trained = _seven_steps(runs, settings, console)
    if code == 0:
        _where_to_look(console, settings, trained, saved, time.perf_counter() - started)
    return code


def _seven_steps(runs: LinkedRuns, settings: PipelineSettings, console: Console) -> tuple[int, dict]:
    demo_root = settings.recordings_dir
    step = _stepper(console)
    with step(f"1/7 synthetic recordings as tatbot's recorder writes them (fork v3.0, one v2.1) in {demo_root}"):
        make_demo_recordings(demo_root)
    with step("2/7 recordings sensor + ingest_recordings: stroke_recording, recording_validation"):
        ingest(runs, settings, console)
    # No calibrate_sim here: the demo's recordings are synthetic, recorded on the simulated arm's own plant, so a fit
    # finds trossen-arm-sim's gains again (bench/bench_sim_gate.py: gap 0.00 -> 0.00 mm). A lab's split is another
    # matter: README "Calibrating the simulated arms".
    with step("3/7 build_splits: usable episodes -> train/val LeRobot datasets") as done:
        done(run_job(runs, "build_splits", settings=settings)["summary"])
    with step(f"4/7 train_policy_job: lerobot-train, tiny_smolvla, {DEMO_TRAIN_STEPS} steps on CPU") as done:
        trained = run_job(runs, "train_policy_job",
                          {"trained_policy": {"preset": "tiny_smolvla", "steps": DEMO_TRAIN_STEPS}}, settings)
        done(trained["summary"])
    with step("5/7 evaluate_policy: open-loop replay of the val split + open-loop gate (the demo's relaxed "
              "limits)") as done:
        evaluation = run_job(runs, "evaluate_policy", {"policy_evaluation": DEMO_GATE}, settings)
        done(evaluation["summary"])
    with step("6/7 simulate_policy: closed loop on two simulated arm controllers + sim gate (the demo's relaxed "
              "limits)") as done:
        simulation = run_job(runs, "simulate_policy", {"sim_evaluation": DEMO_SIM_GATE}, settings)
        done(simulation["summary"])
    if not simulation["promoted"]:
        console.line("error: the checkpoint was not promoted, and robot_eval rolls out the promoted checkpoint "
                     "only; see policy_evaluation and sim_evaluation in the UI")
        return 1, trained
    with step("7/7 robot_eval: deploy the promoted checkpoint, vla_infer on the sim robot over MCP") as done:
        rollout = run_job(runs, "robot_eval", {"resolve_checkpoint": {"device": "cpu", "max_steps": 40}},
                          settings)
        done(rollout["summary"])
    return 0, trained


def _stepper(console: Console):
    """`with step(title) as done: ... done(result)`: the step's headline, its result line, and its time."""
    @contextlib.contextmanager
    def step(title: str):
        console.line(f"\n==> {title}")
        t0, said = time.perf_counter(), []
        yield said.append
        console.line(f"    {said[-1] if said else 'done'} ({time.perf_counter() - t0:.1f} s)")

    return step


def _where_to_look(console: Console, settings: PipelineSettings, trained: dict, saved: Path, seconds: float) -> None:
    console.line(f"\nDemo finished in {seconds:.0f} s. Where to look:")
    console.line(f"  recordings:         {settings.recordings_dir}")
    console.line(f"  validation reports: {settings.validation_dir}")
    console.line(f"  splits:             {settings.splits_dir / 'latest'}")
    console.line(f"  checkpoint:         {trained['checkpoint']}")
    console.line(f"  eval datasets:      {settings.eval_datasets_dir}")
    console.line(f"  Dagster instance:   {os.environ['DAGSTER_HOME']}")
    console.line(f"  full logs:          {console.log_path} (this run), {settings.train_dir / 'logs'} (lerobot-train)")
    paths = {"TATBOT_RECORDINGS_DIR": str(settings.recordings_dir), "TATBOT_PIPELINE_HOME": str(settings.home)}
    if saved_settings(saved.parent).items() >= paths.items():
        console.line(f"  settings:           {saved}: `dagster dev` run here reads the demo's recordings and home from "
                     "it unless your shell exports TATBOT_RECORDINGS_DIR / TATBOT_PIPELINE_HOME (an export always wins)")
    else:
        console.line("  settings:           not saved (temporary paths): for a later `dagster dev` to see this demo, "
                     + "; ".join(f"export {k}={shlex.quote(v)}" for k, v in paths.items()))
    console.line(watch_the_loop(settings.recordings_dir, settings.retrain_cron))
