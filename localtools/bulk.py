"""``python -m yogapose predict`` over many inputs: folders, globs, S3 prefixes, URLs.

Sources are expanded in a stable order (arguments in the order given, folders and globs
sorted, S3 listings in key order), classified in this process or in ``--workers N``
processes (one interpreter and one model each), and written as one record per source
(``yogapose.batch.record``: the same shape the Lambda's bulk answers use) in input order:

* ``jsonl`` one JSON object per line; ``csv`` one row per record, one column per label;
  ``json`` one JSON array. Each record is flushed as it is written, so an interrupted run
  keeps everything finished so far and ``--resume`` carries on from there.
* A progress bar (tqdm: rate and ETA) on stderr when stderr is a terminal, and a summary
  (per pose, errors by code, images/s) on stderr at the end.
* Exit status: 0 every item classified, 1 any item failed (a failure kept from the run that
  ``--resume`` carries on counts too) or the output could not be written, 2 usage error.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import glob
import io
import json
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from yogapose.batch import (
    DETAIL_FIELDS,
    IMAGE_EXTENSIONS,
    RECORD_FIELDS,
    is_folder_marker,
    is_image_name,
    record_for,
)

FORMATS = ("jsonl", "csv", "json")
# --output FILE without --format: the format its name says, else JSON Lines.
FORMAT_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
# ``scheme://``: a URL, even of a scheme the function refuses (its record says why), never a file.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = frozenset("*?[")


class UsageError(Exception):
    """Bad command line (exit status 2): nothing to classify, an unusable --resume, ..."""


class ModelError(Exception):
    """The model could not be loaded, here or in a worker (exit status 1, one line)."""


class OutputError(Exception):
    """The output file could not be written mid-run, e.g. a full disk (exit status 1, one line)."""


# ------------------------------------------------------------------------------ sources


def is_url(text: str) -> bool:
    return _URL.match(text) is not None


def is_s3_listing(text: str) -> bool:
    """``s3://bucket/``, ``s3://bucket`` or ``s3://bucket/prefix/``: list, don't fetch."""
    if text[:5].lower() != "s3://":
        return False
    _bucket, _sep, key = text[5:].partition("/")
    return key == "" or key.endswith("/")


def is_s3_key(text: str) -> bool:
    """``s3://bucket/key``: one object, fetched (what a prefix looks like without its '/')."""
    return text[:5].lower() == "s3://" and not is_s3_listing(text)


def is_many(argument: str) -> bool:
    """Whether one command-line argument may stand for many sources."""
    if is_url(argument):
        return is_s3_listing(argument)
    return Path(argument).is_dir() or any(c in argument for c in _GLOB_CHARS)


def expand(arguments: Sequence[str]) -> list[str]:
    """Every source the arguments name, in order, each once.

    Folders are walked recursively (image extensions only, hidden entries skipped), globs
    matched (``**`` recursive), S3 prefixes listed page by page; a file or URL named
    explicitly is kept as is, so a missing or non-image file still gets its own error record.
    """
    seen: set[str] = set()
    out: list[str] = []
    for argument in arguments:
        for source in _expand_one(argument):
            if source not in seen:
                seen.add(source)
                out.append(source)
    return out


def _expand_one(argument: str) -> Iterator[str]:
    if is_url(argument):
        if is_s3_listing(argument):
            yield from list_s3(argument)
        else:
            yield argument
        return
    path = Path(argument)
    if path.is_dir():
        yield from walk(path)
    elif any(c in argument for c in _GLOB_CHARS):
        for match in sorted(glob.glob(argument, recursive=True)):
            p = Path(match)
            if p.is_dir():
                yield from walk(p)
            elif p.is_file() and is_image_name(p.name):
                yield match
    else:
        yield argument


def walk(folder: Path) -> Iterator[str]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_image_name(name):
                yield os.path.join(root, name)


def list_s3(uri: str, client: Any = None) -> Iterator[str]:
    """``s3://bucket/key`` of each image object under an ``s3://bucket/prefix/``.

    ListObjectsV2 answers at most 1,000 keys per page; the paginator follows the
    continuation tokens. Folder markers and non-image keys are left out, as for folders.
    """
    bucket, _sep, prefix = uri[5:].partition("/")
    if client is None:
        from yogapose import s3client
        from yogapose.config import load_settings

        client = s3client.client(load_settings())
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if not is_folder_marker(key, obj.get("Size")) and is_image_name(key):
                    yield f"s3://{bucket}/{key}"
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise UsageError(f"cannot list {uri}: {code}") from None
    except BotoCoreError as exc:
        raise UsageError(f"cannot list {uri}: {exc}") from None


# ------------------------------------------------------------------------------ classifying

_worker: dict[str, Any] = {}


def init_worker(settings: Any, details: bool) -> None:
    """Load the app once per process (the pool's initializer; also used in-process)."""
    from yogapose import observability
    from yogapose.app import get_app

    # Records go to stdout; keep the (rare) log lines out of it.
    handler = getattr(observability.logger, "registered_handler", None)
    if handler is not None and hasattr(handler, "setStream"):
        handler.setStream(sys.stderr)
    _worker["app"] = get_app(settings)
    _worker["details"] = details
    _worker["settings"] = (settings, details)


def init_pool_worker(settings: Any, details: bool) -> None:
    """The pool's initializer: a model that fails to load is reported by the first task as
    a :class:`ModelError` (one line in the parent), not as a worker's traceback."""
    try:
        init_worker(settings, details)
    except (RuntimeError, ValueError, OSError) as exc:
        _worker["error"] = f"cannot load the model: {exc}"


def loaded_app() -> Any:
    """The app :func:`init_worker` loaded in this process."""
    return _worker["app"]


def classify_source(source: str) -> dict[str, Any]:
    """One source -> its record, in whichever process runs it (raises only ModelError)."""
    from yogapose import batch
    from yogapose.observability import RequestStats

    if "error" in _worker:
        raise ModelError(_worker["error"])
    app = _worker["app"]
    details = _worker["details"]
    stats = RequestStats()
    if is_url(source):
        rec = record_for(source, lambda: batch.classify_url(app, source, stats, details), stats)
        error = rec.get("error")
        if error and error.get("code") == "not_found" and is_s3_key(source):
            error["message"] += " (to classify every image under a prefix, end it with '/')"
        return rec
    return record_for(source, lambda: batch.classify(app, read_local(source, app.settings.max_bytes),
                                                     stats, details), stats)


def read_local(source: str, max_bytes: int) -> bytes:
    """A local file's bytes, with the size limit checked before reading."""
    from yogapose.errors import BadRequest, PayloadTooLarge

    path = Path(source)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise BadRequest(f"{source}: not a file")
        if size > max_bytes:
            raise PayloadTooLarge(f"{source}: {size} bytes, over the limit of {max_bytes}")
        return path.read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read {source}: {exc.strerror or exc}") from None


def classify_all(sources: Sequence[str], settings: Any, details: bool, workers: int) -> Iterator[dict[str, Any]]:
    """Records in input order: in this process for one worker, else a process pool.

    Workers are spawned (a fresh interpreter each, no inherited threads or model) and each
    loads the model once in its initializer; ``map`` hands results back in input order.
    """
    if workers <= 1 or len(sources) <= 1:
        if _worker.get("settings") != (settings, details):
            init_worker(settings, details)
        for source in sources:
            yield classify_source(source)
        return
    ctx = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=init_pool_worker, initargs=(settings, details)
        ) as pool:
            # Small chunks keep the order-preserving map from waiting long on one slow worker.
            chunk = max(1, min(8, len(sources) // (workers * 16)))
            yield from pool.map(classify_source, sources, chunksize=chunk)
    except concurrent.futures.process.BrokenProcessPool:
        raise ModelError("a worker process failed (it could not load the model, or was killed); "
                         "the records written so far are kept") from None


# ------------------------------------------------------------------------------ output


def csv_columns(labels: Sequence[str], details: bool) -> list[str]:
    """CSV header: the record's fields (``probabilities`` as one column per label), then the
    error columns."""
    cols = [c for field in RECORD_FIELDS for c in (labels if field == "probabilities" else [field])]
    if details:
        cols += list(DETAIL_FIELDS)
    return [*cols, "error_code", "error_message"]


def csv_row(rec: dict[str, Any], columns: Sequence[str]) -> list[Any]:
    """A record flattened onto ``columns`` (nested values such as ``person`` as JSON)."""
    flat: dict[str, Any] = {k: v for k, v in rec.items() if k not in ("probabilities", "error")}
    flat.update(rec.get("probabilities") or {})
    if "error" in rec:
        flat["error_code"] = rec["error"].get("code")
        flat["error_message"] = " ".join(str(rec["error"].get("message", "")).split())
    row = []
    for col in columns:
        value = flat.get(col)
        if isinstance(value, (dict, list)):
            value = json.dumps(value, separators=(",", ":"))
        row.append("" if value is None else value)
    return row


class Writer:
    """Writes records in one format to a stream, flushing each (JSON: the array at the end)."""

    def __init__(self, stream: IO[str], fmt: str, labels: Sequence[str], details: bool,
                 header: bool = True) -> None:
        self.stream, self.fmt = stream, fmt
        self.columns = csv_columns(labels, details)
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        self.items: list[dict[str, Any]] = []
        if self.csv is not None and header:
            self.csv.writerow(self.columns)
            stream.flush()

    def write(self, rec: dict[str, Any]) -> None:
        if self.fmt == "json":
            self.items.append(rec)
            return
        if self.csv is not None:
            self.csv.writerow(csv_row(rec, self.columns))
        else:
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            json.dump(self.items, self.stream, indent=2, ensure_ascii=False)
            self.stream.write("\n")
        self.stream.flush()


def done_sources(path: Path, fmt: str) -> dict[str, bool]:
    """Sources already recorded in ``path`` (``--resume``), each with whether its record is an
    error, after cutting off a torn last line.

    A run killed mid-write can leave half a line; it is truncated away so appending starts
    on a clean line, and that source runs again.
    """
    if fmt == "json":
        raise UsageError("--resume needs --format jsonl or csv (a JSON array cannot be appended to)")
    if not path.exists():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)
        data = data[:end]
    text = data.decode("utf-8", "replace")
    done: dict[str, bool] = {}
    if fmt == "csv":
        rows = csv.reader(io.StringIO(text))
        header = next(rows, None)
        if header is None:
            return done
        if "source" not in header:
            raise UsageError(f"{path} is not a CSV written by this command (no 'source' column)")
        col = header.index("source")
        err = header.index("error_code") if "error_code" in header else None
        for row in rows:
            if len(row) > col:
                done[row[col]] = err is not None and len(row) > err and bool(row[err])
        return done
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("source"), str):
            done[rec["source"]] = "error" in rec
    return done


# ------------------------------------------------------------------------------ the run


@dataclass
class Summary:
    total: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # of those, records that are errors: still failures of the output
    poses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, rec: dict[str, Any]) -> None:
        self.total += 1
        if "error" in rec:
            self.errors[rec["error"].get("code", "internal_error")] += 1
        else:
            self.poses[rec.get("pose") or "none"] += 1

    def text(self, labels: Iterable[str]) -> str:
        rate = self.total / self.seconds if self.seconds > 0 else 0.0
        ok = self.total - sum(self.errors.values())
        lines = [f"{self.total} images in {self.seconds:.1f} s ({rate:.1f} images/s): "
                 f"{ok} classified, {sum(self.errors.values())} failed"
                 + (f", {self.skipped} skipped (--resume" if self.skipped else "")
                 + (f"; {self.skipped_failed} of them failed before" if self.skipped_failed else "")
                 + (")" if self.skipped else "")]
        poses = [f"{label} {self.poses.get(label, 0)}" for label in labels]
        poses += [f"{k} {v}" for k, v in sorted(self.poses.items()) if k not in set(labels)]
        lines.append("  poses:  " + ", ".join(poses))
        if self.errors:
            lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in self.errors.most_common()))
        return "\n".join(lines)


def run(arguments: Sequence[str], settings: Any, *, fmt: str | None, output: Path | None,
        workers: int, resume: bool, details: bool, labels: Sequence[str]) -> int:
    """The bulk ``predict``: expand, skip what ``--resume`` finds, classify, write, summarise."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if resume and output is None:
        raise UsageError("--resume needs --output FILE (it skips the sources already in it)")
    fmt = output_format(fmt, output)
    sources = expand(arguments)
    if not sources:
        raise UsageError(f"no images found in {' '.join(arguments)[:300]} "
                         f"(folders are searched for {' '.join(sorted(IMAGE_EXTENSIONS))})")
    summary = Summary()
    if resume:
        assert output is not None
        sources = _skip_done(sources, done_sources(output, fmt), summary)
    try:
        # Loaded here whatever the worker count: before the output is opened (a model that
        # does not load must not have emptied an earlier run's file) and before the bar (its
        # log lines come first). Pool workers load their own copy.
        init_worker(settings, details)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the model: {exc}") from None
    header = not (resume and output is not None and output.exists() and output.stat().st_size > 0)
    stream = sys.stdout if output is None else _open_output(output, "a" if resume else "w")
    progress = _progress(len(sources))
    t0 = time.perf_counter()
    try:
        writer = Writer(stream, fmt, labels, details, header=header)
        for rec in classify_all(sources, settings, details, workers):
            writer.write(rec)
            summary.add(rec)
            progress.update(1)
        progress.close()  # before a JSON array lands on the same terminal
        writer.close()
        if stream is not sys.stdout:
            stream.close()  # flushes: a full disk may only show here
    except OSError as exc:
        if stream is sys.stdout:
            raise  # a closed pipe: the command line's to report
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        summary.seconds = time.perf_counter() - t0
        progress.close()
        _close_quietly(stream)
    print(summary.text(labels), file=sys.stderr)
    return 1 if summary.errors or summary.skipped_failed else 0


def _close_quietly(stream: IO[str]) -> None:
    """Close an output file on the way out of a failed or interrupted run: that failure is
    what gets reported, not a second one from flushing."""
    if stream is not sys.stdout and not stream.closed:
        with contextlib.suppress(OSError):
            stream.close()


def _skip_done(sources: list[str], done: dict[str, bool], summary: Summary) -> list[str]:
    """The sources ``--resume`` still has to classify; the skipped ones counted in ``summary``."""
    summary.skipped = sum(1 for s in sources if s in done)
    summary.skipped_failed = sum(1 for s in sources if done.get(s))
    return [s for s in sources if s not in done]


def output_format(fmt: str | None, output: Path | None) -> str:
    """``--format``; else what ``--output``'s extension says; else a JSON array for a terminal
    (readable) and JSON Lines for a file or pipe."""
    if fmt is None and output is not None:
        fmt = FORMAT_BY_SUFFIX.get(output.suffix.lower())
    fmt = fmt or ("json" if output is None and sys.stdout.isatty() else "jsonl")
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    return fmt


def _open_output(path: Path, mode: str) -> IO[str]:
    try:
        return path.open(mode, encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _progress(total: int) -> Any:
    """tqdm on stderr, only when stderr is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # the [cli] group is not installed: run without a bar
        return _NoProgress()
    return tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

