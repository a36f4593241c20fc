"""``deepfake-detector``: the command-line shell over the library. It parses flags and calls the
library; it never touches tensors."""

from __future__ import annotations

import argparse
import sys

from deepfake_detector.cli import (
    calibrate,
    evaluate,
    explain,
    export,
    fetch_backbone,
    fetch_face_detector,
    info,
    predict,
    report,
    serve,
    train,
    train_head,
)
from deepfake_detector.version import __version__

COMMANDS = (
    predict,
    report,
    info,
    evaluate,
    calibrate,
    explain,
    train,
    train_head,
    fetch_backbone,
    fetch_face_detector,
    serve,
    export,
)

EXIT_OK, EXIT_INPUT_ERRORS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepfake-detector",
        description="Detect deepfake images: is this fake, how sure, and why.",
        epilog="Exit codes: 0 all inputs scored, 1 some inputs failed (see their error rows), "
        "2 bad usage or the model could not be loaded.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command and returns its exit code."""
    args = build_parser().parse_args(argv)
    from deepfake_detector.errors import DetectorError

    try:
        return args.run(args)
    except DetectorError as error:
        print(f"deepfake-detector {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def entry_point() -> None:
    sys.exit(main())
