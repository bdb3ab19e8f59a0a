"""Command line: the quickest way to try the model on a laptop.

    python -m yogapose predict photo.jpg https://example.com/pose.jpg [--model PATH]
    python -m yogapose serve [--host 127.0.0.1] [--port 3000]   # local Function URL + web page
    python -m yogapose emulator [--port 8080]                   # real Lambda RIE + awslambdaric

``predict`` prints the same JSON a direct invoke returns (one object for one input, a list
for several, failed items as ``{"error": ...}``). Exit codes: 0 ok, 1 a prediction failed
(one-line message on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

URL_PREFIXES = ("http://", "https://", "s3://")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m yogapose", description="Yoga pose classifier.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="classify local images and/or URLs, print JSON")
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL",
                   help="image file, http(s):// URL or s3://bucket/key")
    p.add_argument("--model", type=Path, default=None,
                   help="model .tflite (its .json metadata beside it); default: MODEL_PATH or model/yoga-pose.tflite")

    s = sub.add_parser("serve", help="serve the handler as a local Function URL (web page on /)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)

    e = sub.add_parser("emulator", help="run the real AWS Lambda RIE + awslambdaric on 127.0.0.1")
    e.add_argument("--port", type=int, default=8080)
    e.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        return predict(args.sources, args.model)
    if args.command == "serve":
        from localtools.localserver import (
            serve,  # the web helper's module: imported only when used
        )

        serve(args.host, args.port)
        return 0
    from localtools import emulator

    try:
        emulator.run(args.port, log_level=args.log_level)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0  # not reached: run() replaces this process


def predict(sources: list[str], model: Path | None = None) -> int:
    from yogapose.config import load_settings
    from yogapose.errors import BadRequest, PayloadTooLarge, PoseError

    try:
        settings = load_settings()
        if model is not None:
            settings = dataclasses.replace(settings, model_path=model)
        from yogapose import observability
        from yogapose.app import get_app

        # JSON goes to stdout; keep the (rare) log lines out of it.
        handler = getattr(observability.logger, "registered_handler", None)
        if handler is not None and hasattr(handler, "setStream"):
            handler.setStream(sys.stderr)
        app = get_app(settings)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1

    def one(source: str) -> dict[str, Any]:
        stats = observability.RequestStats()
        if source.lower().startswith(URL_PREFIXES):
            return app.classify_url(source, stats)
        path = Path(source)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise BadRequest(f"{source}: not a file")
            if size > settings.max_bytes:
                raise PayloadTooLarge(f"{source}: {size} bytes, over the limit of {settings.max_bytes}")
            data = path.read_bytes()
        except OSError as exc:
            raise BadRequest(f"cannot read {source}: {exc.strerror or exc}") from None
        return app.classify_bytes(data, stats)

    results: list[Any] = []
    failed = 0
    for source in sources:
        try:
            results.append(one(source))
        except PoseError as exc:
            failed += 1
            results.append({"error": exc.to_dict()})
            print(f"error: {source}: {exc.code}: {exc.message}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            failed += 1
            results.append({"error": {"code": "internal_error", "message": type(exc).__name__}})
            print(f"error: {source}: internal error ({type(exc).__name__}: {exc})", file=sys.stderr)
    if len(sources) == 1:
        if failed:
            return 1
        print(json.dumps(results[0], indent=2))
        return 0
    print(json.dumps(results, indent=2))
    return 1 if failed else 0
