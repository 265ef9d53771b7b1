"""`tatbot-pipeline` console script: synth, validate, demo, mcp, arm."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


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

    settle = args.settle_seconds if args.settle_seconds is not None else PipelineSettings.from_env().settle_seconds
    all_usable = True
    for path in args.paths:
        report = validate_recording(Path(path), settle_seconds=settle)
        all_usable &= report.usable
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
    return 0 if all_usable else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tatbot-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write synthetic stroke recordings laid out like tatbot's stroke_tool")
    p.add_argument("out_dir", help="folder to write recordings into (each recording is a new sub-folder)")
    p.add_argument("--recordings", type=int, default=1)
    p.add_argument("--episodes", type=int, default=4, help="strokes (episodes) per recording")
    p.add_argument("--stroke-length", type=int, default=16, help="frames per episode (scene.stroke_length)")
    p.add_argument("--cameras", action="store_true", help="record observation.images.realsense1/2 videos")
    p.add_argument("--image-shape", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    p.add_argument("--scene", default=None, help="design/scene name (default: cycle through a few)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
