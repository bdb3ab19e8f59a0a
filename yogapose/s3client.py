"""The one S3 client configuration, for every S3 call the project makes: reading images
(``yogapose.fetch``), writing classify-on-upload results (``yogapose.batch``) and listing
prefixes (the CLI, ``localtools.bulk``).

boto3 is imported on first use, so HTTP-only cold starts never pay for it.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol

from .config import platform


class ClientSettings(Protocol):
    """What a client is configured from (``Settings`` and ``fetch.FetchLimits`` fit)."""

    @property
    def connect_timeout(self) -> float: ...

    @property
    def read_timeout(self) -> float: ...

    @property
    def user_agent(self) -> str: ...


_clients: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def client(settings: ClientSettings, left: float | None = None) -> Any:
    """A cached boto3 S3 client (creating one costs ~100 ms; clients are thread-safe).

    Endpoint and region come from the environment the way boto3 reads them, including
    ``AWS_ENDPOINT_URL_S3`` (botocore >= 1.31 / boto3 >= 1.28); they are part of the cache
    key so a changed environment (tests, local runs) gets a fresh client. ``left`` (seconds
    until the call must end) shortens the timeouts and retries when they would outlast it.
    """
    connect, read, attempts = timeouts(settings.connect_timeout, settings.read_timeout, left)
    key = (
        connect,
        read,
        attempts,
        settings.user_agent,
        platform("AWS_ENDPOINT_URL_S3"),
        platform("AWS_ENDPOINT_URL"),
        platform("AWS_REGION") or platform("AWS_DEFAULT_REGION"),
    )
    with _lock:
        found = _clients.get(key)
        if found is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=connect,
                read_timeout=read,
                retries={"total_max_attempts": attempts, "mode": "standard"},
                user_agent_extra=settings.user_agent.split(" ", 1)[0],
            )
            # A private session: boto3.client() on the default session is not thread-safe.
            found = boto3.session.Session().client("s3", config=config)
            _clients[key] = found
        return found


def timeouts(connect: float, read: float, left: float | None) -> tuple[float, float, int]:
    """(connect timeout, read timeout, attempts) for a call that must end within ``left`` s.

    botocore only takes timeouts per client, so a short budget gets a client with one
    attempt and timeouts of half of it, in 0.5 s steps (a handful of cached clients serve
    every budget); the 1.5 s margin of the request deadline absorbs the rounding.
    """
    attempts = 2
    if left is None or left >= (connect + read) * attempts:
        return connect, read, attempts
    step = max(0.5, math.floor(left / 2 / 0.5) * 0.5)
    return min(connect, step), min(read, step), 1


def reset() -> None:
    """Forget cached clients (tests that change credentials or endpoints)."""
    with _lock:
        _clients.clear()
