"""`tatbot-pipeline` console script: synth, validate, demo, mcp."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
