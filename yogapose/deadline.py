"""One time budget per invocation, shared by every fetch and decode of the request.

Lambda kills an invocation at its timeout without an answer, so the request must stop
working a little earlier and report what it could not finish. The budget comes from the
Lambda context (``get_remaining_time_in_millis()`` minus :data:`MARGIN_S`, room to shape
and send the answer); without a context (ipython, the CLI, tests) from a default.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .errors import UpstreamTimeout

#: Kept back from Lambda's remaining time: building the answer, logging, metrics.
MARGIN_S = 1.5
#: template.yaml's default function Timeout (a test keeps them equal): what local runs (the
#: CLI, the local server, the emulator, the fake context) give a request, as Lambda would.
FUNCTION_TIMEOUT_S = 15.0
#: Budget without a Lambda context: the function timeout minus the margin.
DEFAULT_BUDGET_S = FUNCTION_TIMEOUT_S - MARGIN_S


class DeadlineExceeded(UpstreamTimeout):
    """The request's time budget ran out before this item was finished (504, ``upstream_timeout``)."""


class Deadline:
    """A point on the monotonic clock; ``Deadline.never()`` for callers without a budget."""

    __slots__ = ("expires",)

    def __init__(self, expires: float) -> None:
        self.expires = expires

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf)

    @classmethod
    def for_invocation(cls, context: Any = None, default_s: float = DEFAULT_BUDGET_S,
                       margin_s: float = MARGIN_S) -> Deadline:
        """Lambda's remaining time minus ``margin_s``; ``default_s`` without a usable context."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if callable(remaining):
            try:
                left_ms = float(remaining())
            except (TypeError, ValueError):
                left_ms = math.nan
            if math.isfinite(left_ms):
                return cls.after(max(0.0, left_ms / 1000.0 - margin_s))
        return cls.after(default_s)

    def remaining(self) -> float:
        """Seconds left (negative once expired; ``inf`` for :meth:`never`)."""
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def check(self, what: str) -> None:
        """Raise :class:`DeadlineExceeded` naming ``what`` was left undone once the time is up."""
        if self.expired():
            raise DeadlineExceeded(f"the request ran out of time before {what}")

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
