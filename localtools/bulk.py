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
import fnmatch
import glob
import io
import json
import multiprocessing
import os
import re
import signal
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
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
# --workers N: each worker is an interpreter with its own model (~150 MB); a typo such as
# 200 or 1000 would exhaust the machine's memory. Beyond the CPU count, more only helps
# sources that wait on the network.
MAX_WORKERS = 64


class UsageError(Exception):
    """Bad command line (exit status 2): nothing to classify, an unusable --resume, ..."""


class ModelError(Exception):
    """The model could not be loaded, here or in a worker (exit status 1, one line)."""


class OutputError(Exception):
    """The output file could not be written mid-run, e.g. a full disk (exit status 1, one line)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while classifying: ``status`` 130 or 143, the message says what was kept."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by the command line's handler: stopped as cleanly as Ctrl-C (the
    workers ended, a JSON array closed) instead of the process just vanishing."""


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
    return _kind(argument) == "dir" or _is_pattern(argument)


def _is_pattern(argument: str) -> bool:
    """A glob: wildcard characters, and no file of that very name (``img[1].jpg`` may exist)."""
    return any(c in argument for c in _GLOB_CHARS) and not os.path.lexists(argument)


def _kind(path: str) -> str:
    """``dir``, ``file``, ``other`` (missing, a device, a broken link) or ``error``: stat
    itself failed (no permission on a parent, a name too long), which pathlib's is_dir()
    raises instead of answering."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "other"
    except (OSError, ValueError):  # ValueError: a NUL byte
        return "error"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def expand(arguments: Sequence[str]) -> list[str]:
    """Every source the arguments name, in order, each once.

    Folders are walked recursively (image extensions only, hidden entries skipped), globs
    matched (``**`` recursive), S3 prefixes listed page by page; a file or URL named
    explicitly is kept as is, so a missing or non-image file still gets its own error record.
    A folder that cannot be listed is a source too: its record says why.
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
    if _kind(argument) == "dir":
        yield from walk(Path(argument))
    elif _is_pattern(argument):
        found = False
        try:
            matches = sorted(glob_matches(argument))
        except RecursionError:  # one level of recursion per folder: ~500 folders deep
            raise UsageError(f"{printable(argument)[:300]}: its folders nest too deeply to match; "
                             "name a deeper folder") from None
        for match in matches:
            kind = _kind(match)
            if kind == "dir":
                found = True
                yield from walk(Path(match))
            elif kind == "error" or (kind == "file" and is_image_name(match)):
                found = True
                yield match
        if not found:  # among other inputs it would vanish without a word (a typo, a wrong folder)
            print(f"warning: {printable(argument)} matches no image", file=sys.stderr)
    else:
        yield argument  # a file, or what stat cannot reach: either way it gets its record


def walk(folder: Path) -> Iterator[str]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders skipped.

    Symlinked folders are not followed (os.walk's default: a link back up would loop). A
    folder that cannot be listed (no permission, a path too long) is yielded itself, where
    its files would have been, so its record says why instead of it vanishing.
    """
    unlisted: list[OSError] = []
    for root, dirs, files in os.walk(folder, onerror=unlisted.append):
        yield from _unlisted(unlisted)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_image_name(name):
                yield os.path.join(root, name)
    yield from _unlisted(unlisted)


def _unlisted(errors: list[OSError]) -> Iterator[str]:
    while errors:
        exc = errors.pop(0)
        if exc.filename is not None:
            yield os.fsdecode(exc.filename)


def glob_matches(pattern: str) -> Iterator[str]:
    """What ``glob.glob(pattern, recursive=True)`` matches, except that a wildcard never
    goes through a symlinked folder, as the folder walk does not (under ``**`` a link back
    up made glob run for ever and list each image dozens of times); the pattern's literal
    folders are followed, as the user named them. A folder a wildcard cannot list
    (permission, name too long) is matched itself, so that its record says why.
    """
    parts = [part for part in pattern.split("/") if part]
    root = "/" if pattern.startswith("/") else ""
    dirs_only = pattern.endswith("/")  # as glob: "photos/*/" names folders only
    if dirs_only and parts and parts[-1] == "**":  # "X/**/": X and every folder below it
        parts = parts[:-1]
        if not parts:
            yield root or "."
            return
    for match in _glob_in(root, parts):
        if not dirs_only or os.path.isdir(match):
            yield match


def _glob_in(folder: str, parts: list[str]) -> Iterator[str]:
    part, rest = parts[0], parts[1:]
    if not glob.has_magic(part):
        path = os.path.join(folder, part)
        if rest:
            yield from _glob_in(path, rest)
        elif os.path.lexists(path):
            yield path
        return
    try:
        with os.scandir(folder or ".") as listing:
            # Hidden names only for a pattern that starts with '.', as glob does.
            entries = sorted((e for e in listing if not e.name.startswith(".") or part.startswith(".")),
                             key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:
        yield folder or "."
        return
    if part == "**":
        yield from _glob_any_depth(folder, entries, parts)
    else:
        yield from _glob_entries(folder, entries, part, rest)


def _glob_any_depth(folder: str, entries: list[os.DirEntry[str]], parts: list[str]) -> Iterator[str]:
    """``**``: no folder, or any number of real (not symlinked) ones."""
    rest = parts[1:]
    if rest:
        yield from _glob_in(folder, rest)
    for entry in entries:
        path = os.path.join(folder, entry.name)
        if _is_real_dir(entry):
            yield from _glob_in(path, parts)
        elif not rest and not _is_symlinked_dir(entry):
            yield path


def _glob_entries(folder: str, entries: list[os.DirEntry[str]], part: str, rest: list[str]) -> Iterator[str]:
    """One wildcard component: the matching entries, into real folders only."""
    for entry in entries:
        if fnmatch.fnmatchcase(entry.name, part):
            path = os.path.join(folder, entry.name)
            if not rest:
                if not _is_symlinked_dir(entry):
                    yield path
            elif _is_real_dir(entry):
                yield from _glob_in(path, rest)


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_symlinked_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


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
    # Ctrl-C reaches the whole process group: the parent stops the workers itself, so they
    # ignore it (a worker loading the model printed a traceback for it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="exit-with-parent", daemon=True).start()
    try:
        init_worker(settings, details)
    except (RuntimeError, ValueError, OSError) as exc:
        _worker["error"] = f"cannot load the model: {exc}"


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End the workers now: leaving the pool waits for their current images (a slow URL can
    hold one for a minute). Python 3.14 has terminate_workers(); before it, the pool's own
    process table."""
    # Taken first: shutdown() sets the table to None (a second Ctrl-C then hung, the workers
    # idle and the interpreter waiting for them at exit).
    processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    for process in processes.values():
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(5)


def _exit_with_parent(parent: int) -> None:
    """A worker's watch: once its parent is gone (killed with no chance to stop the pool,
    the worker re-parented), exit instead of living on with a loaded model."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


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
    """A local file's bytes, with the size limit checked before reading.

    The codes match the S3 ones for the same failures: missing -> ``not_found``, no
    permission -> ``target_not_allowed`` (it may not be read); anything else (a name too
    long, a folder, a device) -> ``bad_request``.
    """
    from yogapose.errors import BadRequest, PayloadTooLarge

    path = Path(source)
    try:
        size = path.stat().st_size
        if path.is_dir():
            os.scandir(source).close()  # a folder is a source only when it could not be listed
            raise BadRequest(f"{source}: a folder, not a file")
        if not path.is_file():
            raise BadRequest(f"{source}: not a file")
        if size > max_bytes:
            raise PayloadTooLarge(f"{source}: {size} bytes, over the limit of {max_bytes}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since it was measured
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{source}: over the limit of {max_bytes} bytes")
        return data
    except OSError as exc:
        raise _read_error(source, exc) from None


def _read_error(source: str, exc: OSError) -> Exception:
    from yogapose.errors import BadRequest, NotFound, TargetNotAllowed

    message = f"cannot read {source}: {exc.strerror or exc}"
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return NotFound(message)
    if isinstance(exc, PermissionError):
        return TargetNotAllowed(message)
    return BadRequest(message)


def classify_all(sources: Sequence[str], settings: Any, details: bool,
                 workers: int) -> Generator[dict[str, Any], None, None]:
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
            try:
                yield from pool.map(classify_source, sources, chunksize=chunk)
            except BaseException:  # Ctrl-C, SIGTERM, the reader gone: nothing more is wanted
                _stop_workers(pool)
                raise
    except concurrent.futures.process.BrokenProcessPool:
        raise ModelError("a worker process failed (it could not load the model, or was killed); "
                         "the records written so far are kept") from None


# ------------------------------------------------------------------------------ output


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV
# injection"); such cells get a leading "'", and so does a cell that starts with "'", so
# that --resume can take exactly one off again.
_FORMULA_START = frozenset("=+-@\t\r'")


def csv_columns(labels: Sequence[str], details: bool) -> list[str]:
    """CSV header: the record's fields (``probabilities`` as one column per label), then the
    error columns."""
    cols = [c for field in RECORD_FIELDS for c in (labels if field == "probabilities" else [field])]
    if details:
        cols += list(DETAIL_FIELDS)
    return [*cols, "error_code", "error_message"]


def csv_row(rec: dict[str, Any], columns: Sequence[str]) -> list[Any]:
    """A record flattened onto ``columns`` (nested values such as ``person`` as JSON), text
    that a spreadsheet would run as a formula quoted with a leading ``'``."""
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
        if isinstance(value, str) and value[:1] in _FORMULA_START:
            value = "'" + value
        row.append("" if value is None else value)
    return row


def csv_cell_text(cell: str) -> str:
    """A cell as :func:`csv_row` was given it (its formula guard taken off)."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _FORMULA_START else cell


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (os.walk hands its bytes back as
    lone surrogates, which no UTF-8 file or strict stdout can take) shows them as ``\\xff``.
    Records carry this form, and ``--resume`` compares sources in it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: \udxxx
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable_record(value: Any) -> Any:
    """A record with every text in it :func:`printable` (sources and error messages quote paths)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k): printable_record(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_record(v) for v in value]
    return value


class Writer:
    """Writes records in one format to a stream, flushing each.

    JSON is written as one indented array item by item too, so that :meth:`close` after
    an interrupt leaves a complete array of the records written so far; on a terminal it
    is held until :meth:`close`, so that the progress bar on the same screen stays whole.
    """

    def __init__(self, stream: IO[str], fmt: str, labels: Sequence[str], details: bool,
                 header: bool = True) -> None:
        self.stream, self.fmt = stream, fmt
        self.columns = csv_columns(labels, details)
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        # With "\n" as the terminator csv leaves a lone "\r" unquoted, which breaks the row for
        # every reader: a row holding one is written with every cell quoted.
        self.csv_quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL) if fmt == "csv" else None
        self.count = 0
        self.closed = False
        self.held: list[str] | None = [] if fmt == "json" and stream.isatty() else None
        if self.csv is not None and header:
            self.csv.writerow(self.columns)
        elif fmt == "json":
            self._put("[")
        stream.flush()

    def write(self, rec: dict[str, Any]) -> None:
        rec = printable_record(rec)
        if self.csv is not None and self.csv_quoted is not None:
            row = csv_row(rec, self.columns)
            has_cr = any(isinstance(cell, str) and "\r" in cell for cell in row)
            (self.csv_quoted if has_cr else self.csv).writerow(row)
        elif self.fmt == "json":
            item = json.dumps(rec, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            self._put(("," if self.count else "") + "\n  " + item)  # one write: never half an item
        else:
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json" and not self.closed:
            self._put("\n]\n" if self.count else "]\n")
            if self.held is not None:
                self.stream.write("".join(self.held))
        self.closed = True
        self.stream.flush()

    def _put(self, text: str) -> None:
        if self.held is not None:
            self.held.append(text)
        else:
            self.stream.write(text)


def done_sources(path: Path, fmt: str, columns: Sequence[str] = ()) -> dict[str, bool]:
    """Sources already recorded in ``path`` (``--resume``), each with whether its record is an
    error, after cutting off a torn last record.

    A run killed mid-write can leave half a record; it is truncated away so appending starts
    on a clean line, and that source runs again. The file must be one this command wrote in
    this format (for CSV with ``columns``, this run's header): anything else is refused
    before a byte of it is cut or appended to.
    """
    if fmt == "json":
        raise UsageError("--resume needs --format jsonl or csv (a JSON array cannot be appended to)")
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):  # a named pipe would hang the read, a device never end
        raise UsageError(f"--resume needs a regular file, and {path} is not one")
    data = path.read_bytes()
    end = _complete_end(data, fmt)
    text = data[:end].decode("utf-8", "replace").removeprefix("\ufeff")  # an editor's BOM
    if fmt == "csv":
        done = _done_in_csv(text, path, columns)
    else:
        done = _done_in_jsonl(text, path, details=bool(columns) and DETAIL_FIELDS[0] in columns)
    if end < len(data):
        _check_torn_tail(data[end:], not text, path, fmt)
        with path.open("r+b") as fh:
            fh.truncate(end)
    return done


def _complete_end(data: bytes, fmt: str) -> int:
    """Where the last whole record ends: after the last newline, and for CSV the last one
    outside a quoted field (a file name may hold a newline; csv.writer doubles quotes, so
    an even count of them so far means outside)."""
    if fmt != "csv":
        return data.rfind(b"\n") + 1
    end = pos = quotes = 0
    for line in data.split(b"\n")[:-1]:
        pos += len(line) + 1
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            end = pos
    return end


def _done_in_csv(text: str, path: Path, columns: Sequence[str]) -> dict[str, bool]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        return {}
    if "source" not in header:
        raise UsageError(f"{path} is not a CSV written by this command (no 'source' column)")
    if columns and header != list(columns):
        raise UsageError(f"{path} has other columns than this run writes (--details, or another "
                         "model's labels?): its rows would not line up")
    col = header.index("source")
    err = header.index("error_code") if "error_code" in header else None
    done: dict[str, bool] = {}
    for row in rows:
        if len(row) > col:
            done[csv_cell_text(row[col])] = err is not None and len(row) > err and bool(row[err])
    return done


def _done_in_jsonl(text: str, path: Path, details: bool | None = None) -> dict[str, bool]:
    """Sources in a JSON Lines file; with ``details`` given, a classified record of the other
    kind (``--details`` toggled: calibrated and raw probabilities mixed) refuses the file,
    as the CSV header check does."""
    done: dict[str, bool] = {}
    # "\n" only: str.splitlines() also breaks at U+2028, U+2029 and U+0085, which
    # json.dumps(ensure_ascii=False) leaves as they are inside a file name.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not (isinstance(rec, dict) and isinstance(rec.get("source"), str)):
            raise UsageError(f"{path} is not JSON Lines written by this command (line {number} is "
                             "not a record); --resume only appends to its own output")
        if details is not None and "error" not in rec and (DETAIL_FIELDS[0] in rec) != details:
            raise UsageError(f"{path} holds records {'without' if details else 'with'} --details "
                             f"(line {number}); a resumed run must write the same kind")
        done[rec["source"]] = "error" in rec
    return done


def _check_torn_tail(tail: bytes, alone: bool, path: Path, fmt: str) -> None:
    """A torn record starts as this command starts one; in a file with no whole record, any
    other text is not ours to cut (a photo, a document)."""
    tail = tail.removeprefix(b"\xef\xbb\xbf")
    plausible = tail.startswith(b"{") if fmt == "jsonl" else (not alone or b"source".startswith(tail[:6]))
    if not plausible:
        raise UsageError(f"{path} does not end with a record written by this command; "
                         "--resume only appends to its own output")


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
    check_workers(workers)
    if resume and output is None:
        raise UsageError("--resume needs --output FILE (it skips the sources already in it)")
    fmt = output_format(fmt, output)
    sources = expand(arguments)
    if not sources:
        raise UsageError(f"no images found in {' '.join(arguments)[:300]} "
                         f"(folders are searched for {' '.join(sorted(IMAGE_EXTENSIONS))})")
    if output is not None:
        _refuse_output_among_sources(output, sources)
    summary = Summary()
    if resume:
        assert output is not None
        sources = _skip_done(sources, done_sources(output, fmt, csv_columns(labels, details)), summary)
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
    writer: Writer | None = None
    records = classify_all(sources, settings, details, min(workers, len(sources)))
    try:
        writer = Writer(stream, fmt, labels, details, header=header)
        for rec in records:
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
    except KeyboardInterrupt as exc:
        progress.close()
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()  # a JSON array is closed: what was written stays valid JSON
        raise Interrupted(_interrupted(summary.total, len(sources), fmt, output),
                          143 if isinstance(exc, Terminated) else 130) from None
    finally:
        records.close()  # now, not when collected: the workers stop before the message
        summary.seconds = time.perf_counter() - t0
        progress.close()
        _close_quietly(stream)
    print(summary.text(labels), file=sys.stderr)
    return 1 if summary.errors or summary.skipped_failed else 0


def check_workers(workers: int) -> None:
    """``--workers`` between 1 and :data:`MAX_WORKERS` (checked for one input too)."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if workers > MAX_WORKERS:
        raise UsageError(f"--workers must be at most {MAX_WORKERS} (each one loads its own model)")


def _refuse_output_among_sources(output: Path, sources: Sequence[str]) -> None:
    """``--output`` must not be an input: opening it would empty that photo. Paths are
    compared resolved (symlinks, ``./``, ``..``), and an existing output by its inode too
    (a hard link to a photo is that photo)."""
    target = os.path.realpath(output)
    try:
        st = os.stat(output)
        inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        inode = None  # not there yet: nothing of it can be an input
    for source in sources:
        if is_url(source):
            continue
        same = os.path.realpath(source) == target
        if not same and inode is not None:
            try:
                s = os.stat(source)
                same = (s.st_dev, s.st_ino) == inode
            except OSError:
                same = False
        if same:
            raise UsageError(f"--output {output} is one of the inputs ({source}); writing would destroy it")


def _interrupted(written: int, total: int, fmt: str, output: Path | None) -> str:
    """What an interrupt leaves, said for this format and destination."""
    done = f"interrupted after {written} of {total} records"
    if output is None:
        return done
    if fmt == "json":
        return (f"{done}, kept in {output} as a complete JSON array (--resume needs --format "
                "jsonl or csv)")
    return f"{done}, kept in {output}; the same command with --resume carries on"


def _close_quietly(stream: IO[str]) -> None:
    """Close an output file on the way out of a failed or interrupted run: that failure is
    what gets reported, not a second one from flushing."""
    if stream is not sys.stdout and not stream.closed:
        with contextlib.suppress(OSError):
            stream.close()


def _skip_done(sources: list[str], done: dict[str, bool], summary: Summary) -> list[str]:
    """The sources ``--resume`` still has to classify; the skipped ones counted in ``summary``.

    Compared as the records spell them (:func:`printable`)."""
    shown = [printable(s) for s in sources]
    summary.skipped = sum(1 for s in shown if s in done)
    summary.skipped_failed = sum(1 for s in shown if done.get(s))
    return [s for s, name in zip(sources, shown, strict=True) if name not in done]


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

