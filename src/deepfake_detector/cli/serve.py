"""``deepfake-detector serve``: the REST API and the web page, served by uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from deepfake_detector.cli.common import add_detector_arguments, detector_config
from deepfake_detector.serving.config import API_KEY_ENV, ServeConfig
from deepfake_detector.settings import add_flags, build_from_flags


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the REST API and the web page (needs the serve extra)",
        description="Serve POST /v1/predict, /v1/predict/video, /v1/explain, GET /v1/model, /healthz, "
        "/readyz, and a web page at /. API documentation at /docs once it runs.",
    )
    # --max-pixels is the server's own limit (ServeConfig, below), applied to uploads and the detector.
    add_detector_arguments(parser, skip=("max_pixels",))
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (%(default)s: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    add_flags(parser.add_argument_group("limits and batching"), ServeConfig)
    parser.set_defaults(run=run)


def _build_config(args: argparse.Namespace) -> ServeConfig:
    api_key = {"api_key": lambda args: args.api_key or os.environ.get(API_KEY_ENV) or None}
    return build_from_flags(ServeConfig, args, readers=api_key)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.optional import require

    config = _build_config(args)  # bad limits fail before the model loads
    uvicorn = require("uvicorn", "serve")
    require("fastapi", "serve")
    require("python_multipart", "serve")  # FastAPI needs it to read uploads
    from deepfake_detector.cli.common import quiet_libraries
    from deepfake_detector.serving.app import build_app

    quiet_libraries()
    app = build_app(detector_config(args), config)  # the server's own --max-pixels, for the detector too
    if config.api_key is None and not _is_loopback(args.host):
        print(
            f"deepfake-detector serve: warning: listening on {args.host} without an API key; anyone who "
            f"can reach it can use it (set {API_KEY_ENV} or --api-key)",
            file=sys.stderr,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
