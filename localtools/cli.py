"""Command line: the quickest way to try the model on a laptop, or to classify a folder.

    python -m yogapose predict photo.jpg                          # the JSON a direct invoke returns
    python -m yogapose predict photos/ 'more/**/*.png' s3://bucket/prefix/ https://example.com/a.jpg \
        [--format jsonl|csv|json] [--output FILE] [--workers N] [--resume] [--details]
    python -m yogapose serve [--host 127.0.0.1] [--port 3000]   # local Function URL + web page
    python -m yogapose emulator [--port 8080]                   # real Lambda RIE + awslambdaric

``predict`` with one image file or URL prints the same JSON a direct invoke returns. With
several inputs, or a folder, glob or ``s3://bucket/prefix/``, it writes one record per image
with its source (``localtools.bulk``): JSON Lines by default when the output is not a
terminal (``--output FILE.csv`` or ``.json`` without ``--format``: that format). Exit codes:
0 ok, 1 a prediction failed or the output could not be written (one line on stderr, no
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m yogapose", description="Yoga pose classifier.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="classify images: files, folders, globs, URLs, S3 prefixes")
    p.add_argument("sources", nargs="+", metavar="PATH_OR_URL",
                   help="image file, folder (recursive), glob, http(s):// URL, s3://bucket/key "
                        "or s3://bucket/prefix/ (listed)")
    p.add_argument("--model", type=Path, default=None,
                   help="model .tflite (its .json metadata beside it); default: MODEL_PATH or model/yoga-pose.tflite")
    p.add_argument("--format", choices=bulk_formats(), default=None,
                   help="many inputs: one record per image as JSON Lines (default when the output "
                        "is not a terminal), CSV (one column per label) or one JSON array; "
                        "default for --output FILE: from its extension (.jsonl, .csv, .json)")
    p.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                   help="write the records to FILE instead of stdout")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="classify in N processes, one interpreter and model each (default 1, at "
                        "most 64, never more than the images); beyond the CPU count, more "
                        "workers only help images fetched over the network")
    p.add_argument("--resume", action="store_true",
                   help="skip the sources already in --output FILE and append the rest")
    p.add_argument("--details", action="store_true",
                   help="the detailed answer (pose or null, confidence, reason, person box)")

    s = sub.add_parser("serve", help="serve the handler as a local Function URL (web page on /)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)

    e = sub.add_parser("emulator", help="run the real AWS Lambda RIE + awslambdaric on 127.0.0.1")
    e.add_argument("--port", type=int, default=8080)
    e.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"))
    return parser


def bulk_formats() -> tuple[str, ...]:
    from localtools.bulk import FORMATS

    return FORMATS


def main(argv: list[str] | None = None) -> int:
    from yogapose.config import check_environment

    try:  # before any import reads them: one line naming the variable, not a traceback
        check_environment()
    except ValueError as exc:
        print(f"python -m yogapose: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "predict":
        return _predict_command(parser, args)
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


def _predict_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``predict``: one source as the direct-invoke JSON, many as records (localtools.bulk)."""
    from localtools import bulk

    try:
        bulk.check_workers(args.workers)  # one input too: a bad flag is a bad flag
    except bulk.UsageError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    many = (len(args.sources) > 1 or bulk.is_many(args.sources[0]) or args.format is not None
            or args.output is not None or args.resume)
    if not many:
        return predict(args.sources, args.model, details=args.details)
    try:
        settings, labels = _bulk_settings(args.model)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)  # the terminal closed (ssh dropped): the same stop
    try:
        return bulk.run(args.sources, settings, fmt=args.format, output=args.output,
                        workers=args.workers, resume=args.resume, details=args.details,
                        labels=labels)
    except bulk.UsageError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (bulk.ModelError, bulk.OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except bulk.Interrupted as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt as exc:  # before any record was written
        print("interrupted before any record was written", file=sys.stderr)
        return 143 if isinstance(exc, bulk.Terminated) else 130
    except BrokenPipeError:  # `... | head`: the reader left; no traceback, no more output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: the output was closed before every record was written", file=sys.stderr)
        return 1
    except OSError as exc:  # stdout itself failed (> /dev/full); --output's errors are OutputError
        print(f"error: cannot write the records to stdout: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (kill, timeout, docker stop) or SIGHUP (the terminal closed) stops a bulk run
    as Ctrl-C does: the worker processes are ended with it rather than left running on their
    own, and a JSON array is closed."""
    from localtools import bulk

    raise bulk.Terminated()


def _bulk_settings(model: Path | None) -> tuple[Any, tuple[str, ...]]:
    """Settings for the workers and the model's labels (CSV columns), read from its metadata
    only: the workers load the model themselves."""
    from yogapose.config import load_settings
    from yogapose.runtime import model_metadata

    settings = load_settings()
    if model is not None:
        settings = dataclasses.replace(settings, model_path=model)
    return settings, tuple(model_metadata(settings.model_path).labels)  # checked as Model.load does


def predict(sources: list[str], model: Path | None = None, details: bool = False) -> int:
    """One image file or URL -> the JSON a direct invoke returns (exactly as before bulk runs)."""
    from localtools import bulk
    from yogapose import batch
    from yogapose.config import load_settings
    from yogapose.errors import PoseError
    from yogapose.observability import RequestStats

    (source,) = sources
    try:
        settings = load_settings()
        if model is not None:
            settings = dataclasses.replace(settings, model_path=model)
        bulk.init_worker(settings, details)  # loads the model, logs to stderr
        app = bulk.loaded_app()
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 1
    stats = RequestStats()
    try:
        if bulk.is_url(source):
            result: Any = batch.classify_url(app, source, stats, details)
        else:
            result = batch.classify(app, bulk.read_local(source, settings.max_bytes), stats, details)
    except PoseError as exc:
        print(f"error: {source}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"error: {source}: internal error ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
