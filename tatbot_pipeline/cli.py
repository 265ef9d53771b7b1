"""`tatbot-pipeline` console script: synth, validate, demo, mcp, arm, sim-eval, sim-calibrate, digest, rerun."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tatbot_pipeline.config import apply_offline_defaults


def _synth(args: argparse.Namespace) -> int:
    from tatbot_pipeline.synth import SynthSpec, make_recordings

    spec = SynthSpec(
        recordings=args.recordings,
        episodes=args.episodes,
        stroke_length=args.stroke_length,
        cameras=args.cameras,
        image_shape=tuple(args.image_shape),
        seed=args.seed,
        scene=args.scene,
        design=args.design,
        format=args.format,
        strokebatch_joints=args.strokebatch_joints,
        joystick_episodes=None if args.joystick else (),
        saved_episodes=args.saved_episodes,
    )
    try:
        paths = make_recordings(Path(args.out_dir), spec, progress=True)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


def _validate(args: argparse.Namespace) -> int:
    import json

    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.recordings.validate import validate_recording

    settings = PipelineSettings.from_env()
    print(settings.home_note(), file=sys.stderr)  # where converted copies go; stdout is the verdicts' (--json)
    settle = args.settle_seconds if args.settle_seconds is not None else settings.settle_seconds
    all_usable = True
    for path in args.paths:
        # v2.1 recordings are validated through a converted copy under the pipeline home, as in Dagster.
        report = validate_recording(Path(path), settle_seconds=settle, converted_dir=settings.converted_dir)
        all_usable &= not report.failed  # an empty session is not a failure
        if args.json:
            d = report.to_dict()
            d["summary"].pop("action_ranges", None)
            d["summary"].pop("features", None)
            print(json.dumps(d), flush=True)
            continue
        excluded = report.episodes_excluded
        print(f"{report.status.value.upper():10s} {report.recording}  "
              f"{len(report.episodes_usable)}/{report.episodes_total} episodes usable", flush=True)
        for f in report.findings:
            where = f"episode {f.episode}" if f.episode is not None else "recording"
            print(f"    {f.severity.value:10s} {f.check:14s} {where:11s} {f.message}")
        if excluded:
            print(f"    excluded episodes: {sorted(excluded)}")
        if moves := _offset_moves(report.summary.get("offset_paths", {})):
            print(f"    depth offset moved (joystick): {moves}")
    return 0 if all_usable else 1


def _offset_moves(paths: dict) -> str:
    """`episode 2: right 3->4@6` for every stroke whose depth-offset path changes (summary.offset_paths)."""
    out = []
    for ep, arms in sorted(paths.items(), key=lambda kv: int(kv[0])):
        moves = [f"{arm} " + " ".join(f"{a[0]}->{b[0]}@{b[1]}" for a, b in zip(runs, runs[1:]))
                 for arm, runs in arms.items() if len(runs) > 1]
        if moves:
            out.append(f"episode {ep}: {', '.join(moves)}")
    return "; ".join(out)


def _demo(args: argparse.Namespace) -> int:
    from tatbot_pipeline.demo import run_demo

    return run_demo(ui=not args.no_ui, port=args.port)


def _mcp(args: argparse.Namespace) -> int:
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.inference.server import ServerConfig, serve

    config = ServerConfig.from_settings(PipelineSettings.from_env(), host=args.host, port=args.port, backend=args.backend)
    try:
        config.check()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    serve(config)
    return 0


def _arm(args: argparse.Namespace) -> int:
    from tatbot_pipeline.robot.state_dir import UnsafeStateDir

    try:
        return _arming(args)
    except UnsafeStateDir as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _arming(args: argparse.Namespace) -> int:
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.robot import arming

    state_dir = PipelineSettings.from_env().robot_state_dir
    if args.off:
        print("disarmed: hardware rollouts are refused again" if arming.disarm(state_dir) else "was not armed")
        return 0
    if args.status:
        armed = arming.current(state_dir)
        print(armed.describe() if armed else f"not armed ({arming.HOW_TO_ARM})")
        return 0 if armed else 1
    try:
        armed = arming.arm(state_dir, args.minutes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{armed.describe()} — hardware rollouts on this node may move the arms until then.\n"
          f"Stay at the robot. `tatbot-pipeline arm --off` disarms now and stops a running rollout.")
    return 0


def _sim_eval(args: argparse.Namespace) -> int:
    """The sim evaluation from a shell: a verdict per stroke, a summary (or one JSON object), exit 1 when it fails.
    Library output (encoders, dataset writers) goes to a log file under the pipeline home, as in the demo."""
    import json
    import time

    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.console import quiet_console
    from tatbot_pipeline.digest import checkpoint_sha256
    from tatbot_pipeline.evaluation.sim import evaluate_in_sim, val_split_for
    from tatbot_pipeline.evaluation.sim_gate import SimGateLimits

    settings = PipelineSettings.from_env()
    checkpoint = Path(args.checkpoint).resolve()
    try:
        val = Path(args.val) if args.val else val_split_for(checkpoint)
        out_dir = settings.sim_dir(checkpoint_sha256(checkpoint))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with quiet_console(settings.logs_dir / f"sim-eval-{time.strftime('%Y%m%d-%H%M%S')}.log") as console:
        def say(message: str) -> None:  # one line per stroke and stage; the steps are in the log
            if not args.json and ": step " not in message:
                console.line(f"  {message}")

        result = evaluate_in_sim(checkpoint, val, out_dir, episodes=args.episodes or settings.sim_episodes,
                                 limits=SimGateLimits.for_lab(settings), rollout_limits=settings.rollout_limits,
                                 progress=say, plant_scene=settings.calibrated_scene(val))
        if args.json:
            console.line(json.dumps(result.to_json()))
        else:  # each stroke's verdict was said as it finished
            console.line(result.decision.headline())
            console.line(f"rollouts and plots: {out_dir}; full log: {console.log_path}")
    return 0 if result.passed else 1


def _sim_calibrate(args: argparse.Namespace) -> int:
    import json

    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.evaluation.calibration import CalibrationRefused, calibrate

    settings = PipelineSettings.from_env()
    split = Path(args.split).resolve()
    out_dir = Path(args.out) if args.out else settings.calibration_dir(split.name)
    say = (lambda message: None) if args.json else (lambda message: print(f"  {message}", flush=True))
    try:
        result = calibrate(split, out_dir, confirm=args.confirm, progress=say)
    except (CalibrationRefused, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_json()) if args.json else f"{result.headline()}\nfitted scene: {result.scene}; "
          f"plot: {result.plot}")
    return 0


def _digest(args: argparse.Namespace) -> int:
    """Print the digest; with --expect or --evaluated also compare it: 0 on a match, 1 on a mismatch, 2 when there is
    nothing to compare (no such dir, a malformed digest, no recorded evaluation)."""
    from tatbot_pipeline.digest import checkpoint_files, checkpoint_sha256, expected_sha256

    checkpoint = Path(args.checkpoint)
    try:
        checkpoint_files(checkpoint)  # a missing dir is bad input, said before any lookup
        expected, what = (expected_sha256(args.expect), "--expect") if args.expect else (None, "")
        if args.evaluated:
            expected, what = _evaluated_digest(checkpoint)
        actual = checkpoint_sha256(checkpoint)
    except (FileNotFoundError, ValueError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{actual}  {args.checkpoint}")
    if expected is None:
        return 0
    if actual == expected:
        print(f"match: {what} is {expected}")
        return 0
    print(f"error: MISMATCH: the files of {args.checkpoint} have SHA-256 {actual}, but {what} is {expected}"
          + (" — these are not the evaluated bytes: evaluate it again, or deploy the evaluated copy"
             if args.evaluated else ""), file=sys.stderr)
    return 1


def _evaluated_digest(checkpoint: Path) -> tuple[str, str]:
    """The digest policy_evaluation recorded for `checkpoint` and where: its leaderboard entry (else promoted.json)
    under the pipeline home, found by its path, or for a deployed copy (`<run>-<step>`) by the run it was copied
    from. LookupError when no evaluation of it was recorded there."""
    from tatbot_pipeline.checkpoints import run_and_step, run_name
    from tatbot_pipeline.config import PipelineSettings
    from tatbot_pipeline.inference.delivery import deployed_name
    from tatbot_pipeline.promotion import read_leaderboard, read_promoted

    settings = PipelineSettings.from_env()
    here = checkpoint.resolve()
    promoted = read_promoted(settings)
    records = [(e, settings.leaderboard_path) for e in reversed(read_leaderboard(settings))]
    records += [(promoted, settings.promoted_path)] if promoted else []
    for entry, where in records:
        if not (entry.get("checkpoint") and entry.get("checkpoint_sha256")):
            continue
        source = Path(entry["checkpoint"])
        if source.resolve() == here or (run_and_step(source) and deployed_name(source) == here.name):
            when = f", {entry['evaluated_at']}" if entry.get("evaluated_at") else ""
            return entry["checkpoint_sha256"], f"the digest recorded when {run_name(source)} was evaluated ({where}{when})"
    raise LookupError(f"no evaluation of {checkpoint} is recorded in {settings.leaderboard_path} or "
                      f"{settings.promoted_path} ({settings.home_note()}): evaluate it, point TATBOT_PIPELINE_HOME "
                      "at the home that did, or compare with --expect SHA")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tatbot-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write synthetic stroke recordings the way tatbot's stroke_tool and its LeRobot fork do")
    p.add_argument("out_dir", help="folder to write recordings into (each recording is a new sub-folder)")
    p.add_argument("--recordings", type=int, default=1)
    p.add_argument("--episodes", type=int, default=4, help="strokes (episodes) per recording")
    p.add_argument("--stroke-length", type=int, default=16, help="frames per episode (scene.stroke_length)")
    p.add_argument("--format", choices=["v3.0", "v2.1", "lerobot"], default="v3.0",
                   help="recorder era: v3.0 = tatbot's fork since 2025-09-15 (default), v2.1 = the fork before, "
                        "lerobot = upstream lerobot 0.6.1 (finalize() at the end)")
    p.add_argument("--strokebatch-joints", type=int, choices=[14, 16], default=14,
                   help="16: the strokebatch layout before 2025-07-24 (8 URDF joints per arm, plus dt)")
    p.add_argument("--no-cameras", dest="cameras", action="store_false",
                   help="no observation.images.realsense1/2 (stroke_tool records them by default)")
    p.add_argument("--cameras", dest="cameras", action="store_true", help=argparse.SUPPRESS)  # the old opt-in flag
    p.add_argument("--no-joystick", dest="joystick", action="store_false",
                   help="keep every depth offset at offset_num // 2 (default: the operator moves it in some strokes)")
    p.add_argument("--saved-episodes", type=int, default=None,
                   help="stop the session after this many strokes (an interrupted or still running session)")
    p.add_argument("--image-shape", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--scene", default="default", help="scene.name, used in the directory name (tatbot's is 'default')")
    p.add_argument("--design", default=None, help="design_name (default: cycle through a few)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_synth)

    p = sub.add_parser("validate", help="validate recordings (same checks as the recording_validation asset)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="recording dirs")
    p.add_argument("--json", action="store_true", help="one JSON object per recording on stdout")
    p.add_argument("--settle-seconds", type=float, default=None,
                   help="a recording touched more recently than this is 'incomplete' (default: TATBOT_SETTLE_SECONDS or 60)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("demo", help="run the whole pipeline on synthetic recordings, then open the Dagster UI")
    p.add_argument("--no-ui", action="store_true", help="do not leave `dagster dev` running at the end")
    p.add_argument("--port", type=int, default=3000, help="port of the Dagster UI on 127.0.0.1")
    p.set_defaults(func=_demo)

    p = sub.add_parser("mcp", help="serve the vla_infer MCP tool (streamable HTTP) for rollouts on the robot")
    p.add_argument("--host", default="127.0.0.1", help="bind address; beyond loopback TATBOT_MCP_TOKEN is required")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--backend", choices=["sim", "tatbot"], default=None,
                   help="robot backend (default: TATBOT_ROBOT_BACKEND or sim)")
    p.set_defaults(func=_mcp)

    p = sub.add_parser("arm", help="on the robot node, at the robot: allow hardware rollouts for a few minutes")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the node stays armed (at most 120)")
    p.add_argument("--off", action="store_true", help="disarm now (a running rollout stops and parks)")
    p.add_argument("--status", action="store_true", help="say whether the node is armed (exit 1 when not)")
    p.set_defaults(func=_arm)

    p = sub.add_parser("sim-eval", help="roll a checkpoint out closed-loop on simulated arms (trossen-arm-sim) over "
                       "held-out strokes and apply the sim gate (exit 1 when it fails)")
    p.add_argument("checkpoint", help="a pretrained_model dir")
    p.add_argument("--episodes", type=int, default=0, help="held-out strokes to run (default: TATBOT_SIM_EPISODES, 8)")
    p.add_argument("--val", default="", help="the val split (default: beside the train split in its train_config.json)")
    p.add_argument("--json", action="store_true", help="one JSON object: passed, strokes, tip_error_mm_p95, reasons, …")
    p.set_defaults(func=_sim_eval)

    p = sub.add_parser("sim-calibrate", help="fit the simulated arms' servos and command delay to a split's recorded "
                       "strokes (train), report the control gap on its val strokes, write the fitted scene")
    p.add_argument("split", help="a split version dir (splits/<version>, with train/ and val/)")
    p.add_argument("--out", default="", help="where the fitted scene goes (default: outputs/sim_calibration/<version>)")
    p.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="skip the replay through the real-time controllers (the fit itself steps MuJoCo directly)")
    p.add_argument("--json", action="store_true", help="one JSON object: params, gap_before, gap_after, confirmed, …")
    p.set_defaults(func=_sim_calibrate)

    about = ("a checkpoint's SHA-256 as trained_policy, promoted.json and vla_infer see it; with --expect or "
             "--evaluated, compared (exit 0 on a match, 1 on a mismatch, 2 when there is nothing to compare with)")
    p = sub.add_parser("digest", help=about, description=about)
    p.add_argument("checkpoint", help="a pretrained_model dir, or a deployed copy of one")
    against = p.add_mutually_exclusive_group()
    against.add_argument("--expect", metavar="SHA", default="", help="compare with this digest (64 hex digits)")
    against.add_argument("--evaluated", action="store_true",
                         help="compare with the digest policy_evaluation recorded for this checkpoint: its entry in "
                         "outputs/eval/leaderboard.json (else promoted.json) under the pipeline home, found by the "
                         "dir's path or, for a deployed copy named <run>-<step>, by the run it was copied from")
    p.set_defaults(func=_digest)

    p = sub.add_parser("rerun", help="re-execute a failed run from failure, as the UI's button does (a training "
                       "resumes from its last checkpoint); queued for the daemon")
    p.add_argument("run_id", help="the failed run's id (the UI's Runs page, or `dagster run list`)")
    p.add_argument("-w", "--workspace", default="", help="the workspace file `dagster dev` loads (default: "
                   "./workspace.yaml, else the source checkout's)")
    p.set_defaults(func=_rerun)
    return parser


def _rerun(args: argparse.Namespace) -> int:
    import dagster as dg

    from tatbot_pipeline.defs.reexecute import RerunRefused, rerun_from_failure

    # The one `dagster dev` loads: ./workspace.yaml, else the source checkout's (what the activated shell uses).
    workspace = Path(args.workspace or ("workspace.yaml" if Path("workspace.yaml").is_file()
                                        else Path(__file__).resolve().parents[1] / "workspace.yaml"))
    if not workspace.is_file():
        print(f"error: {workspace}: no workspace file (pass -w)", file=sys.stderr)
        return 2
    with dg.DagsterInstance.get() as instance:
        try:
            rerun = rerun_from_failure(args.run_id, workspace, instance)
        except RerunRefused as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"queued run {rerun.run_id}: {rerun.job_name} re-executed from failure of {rerun.parent_run_id} (root run "
          f"{rerun.root_run_id}; a training resumes its run dir). The daemon launches it: `dagster dev` or "
          "`dagster-daemon run` must be running.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_offline_defaults()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
