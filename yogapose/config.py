"""All configuration, read from environment variables in this one place.

Every variable has a safe default; the README documents each of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import __version__

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = _PACKAGE_ROOT / "model" / "yoga-pose.tflite"


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true/false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Build with :func:`load_settings`; pass explicitly in tests."""

    model_path: Path = DEFAULT_MODEL_PATH
    # Download / body cap. Lambda's own payload limit is 6 MB, URLs may point at larger files.
    max_bytes: int = 10 * 1024 * 1024
    # Decompression-bomb guard: 12 MP phone photos pass with room; 40 MP is the default cap.
    max_pixels: int = 40_000_000
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    # Total wall-clock budget for one fetch including redirects; must fit the function timeout.
    fetch_deadline: float = 10.0
    max_redirects: int = 3
    batch_limit: int = 16
    # One vCPU at <= 1,769 MB; two threads only pay off on bigger memory sizes.
    num_threads: int = 1
    allow_private: bool = False
    # Below this top probability the web page says the model is unsure.
    unsure_threshold: float = 0.5
    # Sent on every image fetch: names the software and what it does, no made-up contact URL.
    user_agent: str = f"yogapose/{__version__} (yoga-pose image classifier; AWS Lambda)"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (or a given mapping, for tests).

    Raises ValueError naming the variable when a value is malformed: a misconfigured
    function should fail its init loudly rather than serve with a surprising limit.
    """
    env = os.environ if environ is None else environ
    return Settings(
        model_path=Path(env.get("MODEL_PATH") or DEFAULT_MODEL_PATH),
        max_bytes=_env_int(env, "MAX_IMAGE_BYTES", Settings.max_bytes, 1),
        max_pixels=_env_int(env, "MAX_IMAGE_PIXELS", Settings.max_pixels, 1),
        connect_timeout=_env_float(env, "FETCH_CONNECT_TIMEOUT", Settings.connect_timeout, 0.01),
        read_timeout=_env_float(env, "FETCH_READ_TIMEOUT", Settings.read_timeout, 0.01),
        fetch_deadline=_env_float(env, "FETCH_DEADLINE", Settings.fetch_deadline, 0.01),
        max_redirects=_env_int(env, "FETCH_MAX_REDIRECTS", Settings.max_redirects, 0),
        batch_limit=_env_int(env, "BATCH_LIMIT", Settings.batch_limit, 1),
        num_threads=_env_int(env, "NUM_THREADS", Settings.num_threads, 1),
        allow_private=_env_bool(env, "ALLOW_PRIVATE_URLS", Settings.allow_private),
        unsure_threshold=_env_float(env, "UNSURE_THRESHOLD", Settings.unsure_threshold, 0.0),
    )
