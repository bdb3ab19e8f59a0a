"""Structured logs and CloudWatch metrics (Powertools for AWS Lambda), one place.

* Logger: JSON lines, service ``yoga-pose``, with the Lambda context (request id, function
  name/ARN/memory, cold_start) when a real context is passed. Image bytes are never logged
  and URLs only through :func:`redact` (no query string, no credentials).
* Metrics: CloudWatch Embedded Metric Format on stdout, namespace ``YogaPose`` unless
  ``POWERTOOLS_METRICS_NAMESPACE`` says otherwise. Per request: FetchMs, DecodeMs, DetectMs,
  InferMs, TotalMs, BytesFetched, Images, FlippedCrops; ``PredictedClass`` (dimension
  ``pose``; photos accepted as one of the six only), ``Verdicts`` (dimension ``verdict``)
  and ``Errors`` (dimension ``code``) as
  separate one-metric blobs, because EMF dimensions apply to a whole blob; ``ColdStart``
  once per execution environment (Powertools'
  ``add_cold_start_metric``, which needs a real context).
* Direct calls with ``context=None`` (ipython, the CLI) work: no context keys, no ColdStart,
  and no EMF lines unless running inside Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set);
  ``POWERTOOLS_METRICS_DISABLED=true`` (or ``POWERTOOLS_DEV=true``) silences metrics
  everywhere, ``POWERTOOLS_LOG_LEVEL=WARNING`` the per-request log line.
  Publishing metrics can never fail a request: errors there are logged and swallowed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from . import errors
from .config import log_level, platform, setting
from .deadline import Deadline
from .errors import PoseError

_STAGES = ("fetch", "decode", "detect", "infer")

logger = Logger(service=setting("POWERTOOLS_SERVICE_NAME"), level=log_level())
metrics = Metrics(
    namespace=setting("POWERTOOLS_METRICS_NAMESPACE"),
    service=setting("POWERTOOLS_SERVICE_NAME"),
)
_cold_start_pending = True


def redact(url: object) -> str:
    """A URL safe to log (scheme, host, path only); the fetch module owns the rules."""
    from .fetch import redact_url

    return redact_url(url)


@dataclass
class RequestStats:
    """What one invocation did; filled by the app, published once at the end."""

    kind: str = "direct"  # edge.event_kind: direct | function_url | apigw_v2 | apigw_v1 | map_batch | s3_event
    route: str | None = None
    status: int | None = None
    ms: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in _STAGES})
    bytes_fetched: int = 0
    images: int = 0
    predicted: Counter = field(default_factory=Counter)
    # Open-set verdicts: accepted | no_person | out_of_scope (yogapose.answer.VERDICTS)
    verdicts: Counter = field(default_factory=Counter)
    # Crops the classifier was unsure of and saw mirrored too (Preprocessing.flip_below_margin).
    flipped: int = 0
    errors: Counter = field(default_factory=Counter)
    sources: list = field(default_factory=list)  # redacted URLs, for the log line only
    started: float = field(default_factory=time.perf_counter)
    # The invocation's time budget (from the Lambda context): fetches, decodes and batch
    # items stop at it, so the function always answers before Lambda's timeout.
    deadline: Deadline = field(default_factory=Deadline.for_invocation, repr=False)

    def add_ms(self, stage: str, ms: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + ms

    def timer(self, stage: str) -> _Timer:
        """``with stats.timer("decode"): ...`` adds the elapsed milliseconds to ``stage``."""
        return _Timer(self, stage)

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def server_timing(self) -> str:
        """``Server-Timing`` header value: fetch, decode, detect and infer durations in ms."""
        return ", ".join(f"{s};dur={self.ms.get(s, 0.0):.1f}" for s in _STAGES)


class _Timer:
    __slots__ = ("stage", "stats", "t0")

    def __init__(self, stats: RequestStats, stage: str) -> None:
        self.stats, self.stage = stats, stage

    def __enter__(self) -> Self:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stats.add_ms(self.stage, (time.perf_counter() - self.t0) * 1000.0)


def _has_lambda_context(context: Any) -> bool:
    return all(
        hasattr(context, a)
        for a in ("function_name", "memory_limit_in_mb", "invoked_function_arn", "aws_request_id")
    )


def _documented(exc: PoseError) -> PoseError:
    """``exc`` as the README's error table names it. A refinement defined elsewhere (the
    deadline's ``DeadlineExceeded`` of ``UpstreamTimeout``) becomes its documented class, so
    a direct invoke's ``errorType`` is one name per code, whatever raised it."""
    documented = next(c for c in type(exc).__mro__ if c.__module__ == errors.__name__)
    return exc if type(exc) is documented else documented(exc.message)


def instrument(handler: Callable[[Any, RequestStats], Any]) -> Callable[[Any, Any], Any]:
    """Turn ``handler(event, stats)`` into a Lambda handler ``(event, context)``.

    Adds the Lambda context to every log line (when there is one), logs one summary line
    per invocation and publishes the metrics, also when the handler raises.
    """

    def run(event: Any, context: Any) -> Any:
        stats = RequestStats(deadline=Deadline.for_invocation(context))
        try:
            return handler(event, stats)
        except PoseError as exc:
            stats.error(exc.code)
            # Lambda's runtime answers a raised error with its stackTrace too: the caller's
            # error is the type and message, not our modules' frames (internal errors are
            # logged with theirs where they are caught).
            documented = _documented(exc)
            if documented is exc:
                raise exc.with_traceback(None)  # noqa: B904 - the same error; its __cause__ stays
            raise documented from exc.__cause__
        except Exception:
            stats.error("internal_error")
            raise
        finally:
            publish(stats, context)

    # log_event pinned off: Powertools' POWERTOOLS_LOGGER_LOG_EVENT would otherwise log whole
    # events, with image bytes, signed URLs and Authorization headers.
    with_context = logger.inject_lambda_context(run, clear_state=True, log_event=False)

    def lambda_handler(event: Any, context: Any = None) -> Any:
        if _has_lambda_context(context):
            return with_context(event, context)
        logger.clear_state()
        return run(event, context)

    return lambda_handler


def publish(stats: RequestStats, context: Any) -> None:
    """One summary log line plus the EMF metrics of this invocation. Never raises."""
    global _cold_start_pending
    total = stats.total_ms()
    try:
        logger.info(
            "request done",
            extra={
                "kind": stats.kind,
                "route": stats.route,
                "status": stats.status,
                "images": stats.images,
                "bytes_fetched": stats.bytes_fetched,
                "predicted": dict(stats.predicted),
                "verdicts": dict(stats.verdicts),
                "flipped": stats.flipped,
                "errors": dict(stats.errors),
                "sources": stats.sources[:16],
                "ms": {**{k: round(v, 2) for k, v in stats.ms.items()}, "total": round(total, 2)},
            },
        )
        in_lambda = _has_lambda_context(context)
        # EMF lines only mean something where CloudWatch Logs collects stdout; a direct
        # call in ipython or the CLI (no context, not inside Lambda) stays quiet.
        if is_metrics_disabled() or not (in_lambda or platform("AWS_LAMBDA_FUNCTION_NAME")):
            return
        if _cold_start_pending and in_lambda:
            _cold_start_pending = False
            metrics.provider.add_cold_start_metric(context)
        metrics.add_metric(name="TotalMs", unit=MetricUnit.Milliseconds, value=total)
        if stats.images:
            metrics.add_metric(name="Images", unit=MetricUnit.Count, value=stats.images)
            metrics.add_metric(name="FetchMs", unit=MetricUnit.Milliseconds, value=stats.ms["fetch"])
            metrics.add_metric(name="DecodeMs", unit=MetricUnit.Milliseconds, value=stats.ms["decode"])
            metrics.add_metric(name="DetectMs", unit=MetricUnit.Milliseconds, value=stats.ms["detect"])
            metrics.add_metric(name="InferMs", unit=MetricUnit.Milliseconds, value=stats.ms["infer"])
            metrics.add_metric(name="BytesFetched", unit=MetricUnit.Bytes, value=stats.bytes_fetched)
            metrics.add_metric(name="FlippedCrops", unit=MetricUnit.Count, value=stats.flipped)
        metrics.flush_metrics()
        dims = {"service": metrics.service} if metrics.service else {}
        for pose, n in stats.predicted.items():
            with single_metric(name="PredictedClass", unit=MetricUnit.Count, value=n,
                               namespace=metrics.namespace, default_dimensions={**dims, "pose": pose}):
                pass
        for verdict, n in stats.verdicts.items():
            with single_metric(name="Verdicts", unit=MetricUnit.Count, value=n,
                               namespace=metrics.namespace, default_dimensions={**dims, "verdict": verdict}):
                pass
        for code, n in stats.errors.items():
            with single_metric(name="Errors", unit=MetricUnit.Count, value=n,
                               namespace=metrics.namespace, default_dimensions={**dims, "code": code}):
                pass
    except Exception:
        metrics.clear_metrics()
        logger.warning("publishing metrics failed", exc_info=True)
