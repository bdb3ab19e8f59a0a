"""Many images per request: the per-item record, and the two S3-driven event shapes.

One record shape serves every bulk path, so a CSV from the CLI, a Step Functions result file
and a classify-on-upload result all read the same::

    {"source": "s3://bucket/a.jpg", "pose": "tree", "probability": 0.93,
     "probabilities": {"chair": 0.01, ..., "warrior": 0.02}}
    {"source": "s3://bucket/b.txt", "error": {"code": "unsupported_media_type", "message": "..."}}

Events (``edge.event_kind`` tells them apart; ``App.handle`` sends them here):

* **map_batch**: a child invocation of a Step Functions *Distributed Map* with an S3
  ``ItemReader`` (``s3:listObjectsV2``) and an ``ItemBatcher``:
  ``{"Items": [{"Key", "Size", "Etag", "LastModified", "StorageClass"}, ...],
  "BatchInput": {"bucket": ..., "details": false}}``. Folder markers (``prefix/``, size 0)
  are skipped; every other item gets exactly one record, in order. A bad item never fails
  the batch: only a malformed event does (the map counts that batch as failed).
* **s3_event**: an S3 ``ObjectCreated`` notification (classify on upload). Each object's
  record is written as JSON to ``<RESULTS_PREFIX><key>.json`` in the same bucket; keys under
  that prefix are never classified, so a result can never trigger another run. A failure
  that is not the object's fault (:data:`~yogapose.errors.RETRYABLE_CODES`: a timeout, S3
  throttling, a bug) is not written as its result: the invocation fails after the other
  objects, and S3's asynchronous retry runs it again.

When the request's time budget runs out, items not yet started are reported as timeout
errors instead of being started: the invocation still answers before Lambda's timeout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_plus

from . import formats
from .deadline import DeadlineExceeded
from .errors import RETRYABLE_CODES, BadRequest, PoseError, UnsupportedImage, UpstreamError, echo
from .observability import RequestStats, logger

if TYPE_CHECKING:
    from .app import App

#: File name extensions bulk runs pick up (what ``yogapose.imaging`` decodes); the decoder
#: still sniffs the real format, so a misnamed file gets a clear per-item error.
IMAGE_EXTENSIONS = formats.EXTENSIONS

#: Keys of a successful record, in CSV column order (``probabilities`` becomes one column per
#: label); failed records carry ``source`` and ``error`` instead.
RECORD_FIELDS = ("source", "pose", "probability", "probabilities")
#: Extra keys of a record asked for with ``details`` (the detailed answer's fields).
DETAIL_FIELDS = ("confidence", "reason", "person")


class Clock(Protocol):
    """The request deadline as this module uses it (``yogapose.deadline.Deadline`` fits)."""

    def expired(self) -> bool: ...


def is_image_name(name: str) -> bool:
    """Whether a file name or S3 key has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def is_folder_marker(key: str, size: Any) -> bool:
    """``photos/`` with size 0: what the S3 console's "Create folder" leaves behind."""
    return key.endswith("/") and size in (0, None)


# ------------------------------------------------------------------------------ the record


def record(source: str, answer: Mapping[str, Any] | None = None, error: PoseError | None = None) -> dict[str, Any]:
    """The one per-item record: ``source`` plus the answer, or ``source`` plus ``error``.

    ``answer`` is either the six-key ``{label: probability}`` result or a detailed answer
    (``{"pose", "confidence", "reason", "probabilities", "person"}``); a detailed answer's
    extra fields are copied in (:data:`DETAIL_FIELDS`) and its ``pose`` wins (it may be null
    when the model declines), while ``probability`` is always the top label's.
    """
    if error is not None or answer is None:
        err = error if error is not None else PoseError("no answer for this item")
        return {"source": source, "error": err.to_dict()}
    nested = answer.get("probabilities")
    detailed = isinstance(nested, Mapping)
    probs: Mapping[str, Any] = nested if isinstance(nested, Mapping) else answer
    top = max(probs, key=probs.__getitem__)
    out: dict[str, Any] = {"source": source, "pose": top, "probability": float(probs[top]),
                           "probabilities": {k: float(v) for k, v in probs.items()}}
    if detailed:
        if "pose" in answer:
            out["pose"] = answer["pose"]
        for key in DETAIL_FIELDS:
            if key in answer:
                out[key] = answer[key]
    return out


def classify(app: App, data: bytes, stats: RequestStats, details: bool = False) -> Mapping[str, Any]:
    """Image bytes -> the answer a record is built from (the detailed one when asked)."""
    return app.result(app.classify(data, stats), details)


def classify_url(app: App, url: str, stats: RequestStats, details: bool = False) -> Mapping[str, Any]:
    """An ``http(s)://`` or ``s3://`` source -> its answer (fetched under every fetch limit)."""
    return app.classify_url(url, stats, details)


def record_for(source: str, run: Any, stats: RequestStats) -> dict[str, Any]:
    """``record(source, run())``, with any failure turned into the record's error.

    Unexpected exceptions are logged and reported as ``internal_error`` without details:
    one bad item must never sink the batch.
    """
    try:
        return record(source, run())
    except PoseError as exc:
        stats.error(exc.code)
        return record(source, error=exc)
    except Exception:  # noqa: BLE001 - logged; reported per item
        logger.exception("unexpected error in bulk item %s", source[:200])
        stats.error("internal_error")
        return record(source, error=PoseError("internal error; see the function's logs"))


def timed_out(source: str, stats: RequestStats) -> dict[str, Any]:
    """The record of an item the request had no time left to start."""
    exc = DeadlineExceeded("the request ran out of time before this item was started; run it again")
    stats.error(exc.code)
    return record(source, error=exc)


# ------------------------------------------------------------------------------ events


#: Most items one map batch may hold: template.yaml's BulkBatchSize maximum (a test keeps
#: them equal); the map's ItemBatcher never sends more. It bounds a notification's Records
#: too (S3 sends one per event): a direct invoke could send either by the million.
MAX_MAP_ITEMS = 50


def handle(app: App, event: dict, kind: str, stats: RequestStats, deadline: Clock | None = None) -> Any:
    """Answer a ``map_batch`` (list of records) or ``s3_event`` (records written to S3)."""
    if kind == "map_batch":
        return map_batch(app, event, stats, deadline)
    if kind == "s3_event":
        return s3_notification(app, event, stats, deadline)
    raise BadRequest(f"not a bulk event: {kind}")


def map_batch(app: App, event: dict, stats: RequestStats, deadline: Clock | None = None) -> list[dict[str, Any]]:
    """One record per item of a Distributed Map batch, folder markers left out, in order."""
    items = event.get("Items")
    batch_input = event.get("BatchInput")
    if not isinstance(items, list):
        raise BadRequest("Items must be an array of S3 objects")
    if len(items) > MAX_MAP_ITEMS:  # a direct invoke could send millions: memory, time, answer size
        raise BadRequest(f"Items holds {len(items)} objects; a batch is at most {MAX_MAP_ITEMS}")
    if not isinstance(batch_input, dict):
        raise BadRequest('BatchInput must be an object such as {"bucket": "my-photos"}')
    bucket = batch_input.get("bucket")
    if not isinstance(bucket, str) or not bucket.strip():
        raise BadRequest('BatchInput.bucket must name the bucket the items were listed from')
    from .fetch import MAX_S3_KEY_BYTES, check_bucket

    check_bucket(bucket)  # "my-photos/2026" would quietly read keys under 2026/
    details = batch_input.get("details", False)
    if not isinstance(details, bool):
        raise BadRequest("BatchInput.details must be true or false")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        key = item.get("Key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key:
            exc = BadRequest(f"Items[{i}] has no Key")
            stats.error(exc.code)
            out.append(record(f"s3://{bucket}/", error=exc))
            continue
        if is_folder_marker(key, item.get("Size")):
            continue
        if len(key.encode("utf-8", "surrogatepass")) > MAX_S3_KEY_BYTES:  # no S3 key is: not listed by a map
            exc = BadRequest(f"Items[{i}].Key is longer than S3's {MAX_S3_KEY_BYTES} bytes")
            stats.error(exc.code)
            out.append(record(f"s3://{bucket}/{echo(key, 200)}", error=exc))
            continue
        source = f"s3://{bucket}/{key}"
        out.append(_one_object(app, source, key, stats, deadline, details))
    return out


def s3_notification(app: App, event: dict, stats: RequestStats, deadline: Clock | None = None) -> list[dict[str, Any]]:
    """Classify each uploaded object and write its record to ``<results prefix><key>.json``.

    Returns what was written (``[{"source", "result"}, ...]``; S3 discards it). An object
    whose classification failed for a retryable reason, or whose record cannot be written,
    fails the invocation after the others are done, so S3's asynchronous retry runs it again.
    """
    from .fetch import MAX_S3_KEY_BYTES

    prefix = app.settings.results_prefix  # RESULTS_PREFIX
    written: list[dict[str, Any]] = []
    failures: list[str] = []
    records = event["Records"]
    if not isinstance(records, list) or len(records) > MAX_MAP_ITEMS:
        raise BadRequest(f"Records must be a list of at most {MAX_MAP_ITEMS} S3 notifications")
    for bucket, key, size in _uploaded_objects(records):
        if key.startswith(prefix) or is_folder_marker(key, size):
            continue  # our own result files, or a folder: never classified
        source = f"s3://{bucket}/{key}"
        rec = _one_object(app, source, key, stats, deadline, False)
        error = rec.get("error")
        if error is not None and error["code"] in RETRYABLE_CODES:
            failures.append(f"{source}: {error['message']}")  # not its result: S3 retries
            continue
        result_key = f"{prefix}{key}.json"
        if len(result_key.encode("utf-8")) > MAX_S3_KEY_BYTES:
            # No retry can write it: said in the logs and metrics, the other uploads go on.
            stats.error(BadRequest.code)
            logger.error("no result for %s: its result key would be over S3's %d bytes",
                         source[:200], MAX_S3_KEY_BYTES)
            continue
        try:
            _put_json(app, bucket, result_key, rec, stats.deadline.remaining())
        except PoseError as exc:
            stats.error(exc.code)
            failures.append(f"could not write {result_key}: {exc.message}")
            continue
        written.append({"source": source, "result": f"s3://{bucket}/{result_key}"})
    if failures:
        raise PoseError(f"{len(failures)} upload(s) left for S3's retry: {'; '.join(failures)[:500]}")
    return written


def _uploaded_objects(records: Iterable[Any]) -> Iterable[tuple[str, str, Any]]:
    """``(bucket, key, size)`` per ObjectCreated record; keys arrive URL-encoded (``+`` = space)."""
    for i, rec in enumerate(records):
        s3 = rec.get("s3") if isinstance(rec, dict) else None
        s3 = s3 if isinstance(s3, dict) else {}
        bucket_info, obj = s3.get("bucket"), s3.get("object")
        bucket = bucket_info.get("name") if isinstance(bucket_info, dict) else None
        obj = obj if isinstance(obj, dict) else {}
        key = obj.get("key")
        if not isinstance(bucket, str) or not isinstance(key, str) or not bucket or not key:
            raise BadRequest(f"Records[{i}] is not an S3 notification with s3.bucket.name and s3.object.key")
        event_name = rec.get("eventName", "")
        if isinstance(event_name, str) and event_name and not event_name.startswith("ObjectCreated:"):
            continue  # deletions, restores, ...: nothing to classify
        yield bucket, unquote_plus(key), obj.get("size")


def _one_object(app: App, source: str, key: str, stats: RequestStats, deadline: Clock | None,
                details: bool) -> dict[str, Any]:
    if not is_image_name(key):
        exc = UnsupportedImage(
            f"{PurePosixPath(key).name[:200]} is not an image file name; expected one of "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
        stats.error(exc.code)
        return record(source, error=exc)
    if deadline is not None and deadline.expired():
        return timed_out(source, stats)
    return record_for(source, lambda: classify_url(app, source, stats, details), stats)


def _put_json(app: App, bucket: str, key: str, payload: Any, left: float) -> None:
    """Write ``payload`` as JSON within ``left`` seconds (the request's remaining time)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from . import s3client

    shown = f"s3://{bucket}/{key}"
    if left <= 0:
        raise DeadlineExceeded(f"the request ran out of time before writing {shown}")
    try:
        s3client.client(app.settings, left).put_object(
            Bucket=bucket, Key=key, Body=json.dumps(payload).encode("utf-8"),
            ContentType="application/json",
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise UpstreamError(f"S3 refused writing {shown}: {code} (the role needs s3:PutObject there)") from None
    except (BotoCoreError, OSError) as exc:
        raise UpstreamError(f"writing {shown} to S3 failed: {type(exc).__name__}") from None
