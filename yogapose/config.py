"""All configuration, read from environment variables in this one place.

:data:`VARIABLES` is the one table of them (name, default, parser, bounds, meaning). The
:class:`Settings` defaults come from it, :func:`load_settings` reads by it, and the tests
check the README's Configuration table and the template's ``Environment`` against it.
:data:`PLATFORM_VARIABLES` lists what Lambda and boto3 set that the code consults; no other
module of the package reads the environment (a test keeps it so).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = _PACKAGE_ROOT / "model" / "yoga-pose.tflite"
#: Lambda grants one full vCPU per this many MB of memory (and shows 2 cores below that).
MB_PER_VCPU = 1769


def parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer") from None


def parse_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):  # nan passes every bound check, and timeouts of nan/inf break later
        raise ValueError("must be a finite number")
    return value


def parse_log_level(raw: str) -> str:
    """A level Python's logging (and so Powertools) knows, checked here so a typo stops the init
    with the variable's name instead of inside Powertools."""
    value = raw.strip().upper()
    if value not in {"NOTSET", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return value


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true/false")


def parse_prefix(raw: str) -> str:
    value = raw.strip()
    if not value.endswith("/") or value.startswith("/"):
        raise ValueError("must be an S3 key prefix ending in '/', such as results/")
    return value


def threads_for_memory(env: Mapping[str, str]) -> int:
    """One LiteRT thread per vCPU Lambda grants for the function's memory size, at least 1.

    Lambda shows two cores at 1,769 MB while granting one vCPU, so the visible core count
    would oversubscribe. Outside Lambda (no memory size) this is 1.
    """
    try:
        memory_mb = int(platform("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", env) or "")
    except ValueError:
        return 1
    return max(1, memory_mb // MB_PER_VCPU)


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: where it goes, its default, how it is parsed and bounded."""

    name: str
    #: The :class:`Settings` field it sets; None for variables Powertools reads itself.
    attr: str | None
    default: Any
    parse: Callable[[str], Any] | None
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    #: The default as the README shows it, when ``str(default)`` is not it.
    shown_default: str | None = None
    #: A default that depends on the rest of the environment (wins over ``default``).
    default_from: Callable[[Mapping[str, str]], Any] | None = field(default=None, compare=False)

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))
        return str(self.default)

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value from ``env``, or the default; ValueError naming the variable."""
        raw = env.get(self.name)
        if raw is None or raw.strip() == "":
            return self.default_from(env) if self.default_from is not None else self.default
        assert self.parse is not None, self.name
        try:
            value = self.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.name} {exc}, got {raw!r}") from None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be >= {self.minimum:g}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum:g}, got {value}")
        return value


VARIABLES: tuple[EnvVar, ...] = (
    EnvVar("MODEL_PATH", "model_path", DEFAULT_MODEL_PATH, Path,
           "the model; its metadata (labels, input size, preprocessing) is the .json beside it",
           shown_default="model/yoga-pose.tflite"),
    # Download / body cap. Lambda's own payload limit is 6 MB, URLs may point at larger files.
    EnvVar("MAX_IMAGE_BYTES", "max_bytes", 10 * 1024 * 1024, parse_int,
           "cap for downloads, uploads and base64 images", minimum=1),
    # Decompression-bomb guard: 12 MP phone photos pass with room.
    EnvVar("MAX_IMAGE_PIXELS", "max_pixels", 40_000_000, parse_int,
           "decompression-bomb guard (a 12 MP phone photo passes)", minimum=1),
    EnvVar("FETCH_CONNECT_TIMEOUT", "connect_timeout", 3.0, parse_float,
           "seconds to connect to an image host", minimum=0.01),
    EnvVar("FETCH_READ_TIMEOUT", "read_timeout", 5.0, parse_float,
           "seconds between bytes from the host", minimum=0.01),
    # Total wall-clock budget for one fetch including redirects; must fit the function timeout.
    EnvVar("FETCH_DEADLINE", "fetch_deadline", 10.0, parse_float,
           "total seconds for one fetch, redirects included", minimum=0.01),
    EnvVar("FETCH_MAX_REDIRECTS", "max_redirects", 3, parse_int,
           "redirects followed, each re-checked by the SSRF guard", minimum=0),
    EnvVar("BATCH_LIMIT", "batch_limit", 16, parse_int, "most items in urls / images", minimum=1),
    EnvVar("NUM_THREADS", "num_threads", 1, parse_int,
           "LiteRT threads; default one per vCPU Lambda grants for the memory size", minimum=1, maximum=64,
           shown_default=f"memory MB // {MB_PER_VCPU}, at least 1", default_from=threads_for_memory),
    EnvVar("ALLOW_PRIVATE_URLS", "allow_private", False, parse_bool,
           "true lets URLs reach private/loopback addresses: local testing only"),
    # False for a public demo (the template sets it): its URL answers anyone, and an s3://
    # URI would read the function's buckets for them. Direct invokes need IAM and keep them.
    EnvVar("S3_URLS_OVER_HTTP", "s3_urls_over_http", True, parse_bool,
           "`false` refuses `s3://` URIs in requests through the Function URL (403); "
           "the template sets it for a public demo"),
    # Below this top probability the web page says the model is unsure.
    EnvVar("UNSURE_THRESHOLD", "unsure_threshold", 0.5, parse_float,
           "below this top probability the web page says the model is unsure", minimum=0.0, maximum=1.0),
    # Classify on upload: never a prefix that triggers the function again (yogapose.batch).
    EnvVar("RESULTS_PREFIX", "results_prefix", "results/", parse_prefix,
           "classify on upload writes `<prefix><key>.json` here; keys under it are never classified"),
    # Only to refuse nesting at init: results under the upload prefix trigger again, uploads
    # under the results prefix are never classified (a template Rule cannot compare prefixes).
    EnvVar("UPLOAD_PREFIX", "upload_prefix", "", parse_prefix,
           "classify on upload's trigger prefix (the template sets it); must not nest with `RESULTS_PREFIX`",
           shown_default="unset"),
    # Given to Powertools' logger and metrics by yogapose.observability at import.
    EnvVar("POWERTOOLS_SERVICE_NAME", None, "yoga-pose", str, "service name in logs and metrics"),
    EnvVar("POWERTOOLS_METRICS_NAMESPACE", None, "YogaPose", str, "CloudWatch namespace"),
    # Read by Powertools itself; parsed here only to stop a malformed value at init by name.
    EnvVar("POWERTOOLS_LOG_LEVEL", None, "INFO", parse_log_level, "log level"),
    EnvVar("POWERTOOLS_METRICS_DISABLED", None, None, parse_bool, "true silences metrics",
           shown_default="unset"),
)
BY_NAME: dict[str, EnvVar] = {v.name: v for v in VARIABLES}


#: Variables the platform sets (Lambda's runtime, boto3's conventions) that the code consults
#: but a deployer does not configure here; :func:`platform` is the one way to read them.
PLATFORM_VARIABLES: dict[str, str] = {
    "AWS_LAMBDA_FUNCTION_NAME": "set inside Lambda: metrics are written only there",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "set inside Lambda: NUM_THREADS' default",
    "AWS_LAMBDA_RUNTIME_API": "set inside Lambda: the Runtime API, never a fetch target",
    "AWS_ENDPOINT_URL_S3": "boto3's S3 endpoint override (moto, LocalStack)",
    "AWS_ENDPOINT_URL": "boto3's endpoint override for every service",
    "AWS_REGION": "set inside Lambda: the S3 client's region",
    "AWS_DEFAULT_REGION": "boto3's region outside Lambda",
    "LOG_LEVEL": "Powertools' legacy name of POWERTOOLS_LOG_LEVEL",
}


def platform(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A platform variable of :data:`PLATFORM_VARIABLES` (None when unset or empty)."""
    if name not in PLATFORM_VARIABLES:
        raise KeyError(f"{name} is not a platform variable of yogapose.config")
    env = os.environ if environ is None else environ
    return env.get(name) or None


def setting(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One variable of :data:`VARIABLES`, parsed (or its default), for a module that needs
    it at import, before :func:`load_settings` runs (the Powertools logger's service name)."""
    return BY_NAME[name].read(os.environ if environ is None else environ)


def log_level(environ: Mapping[str, str] | None = None) -> str:
    """The Powertools log level: ``POWERTOOLS_LOG_LEVEL``, else its legacy name ``LOG_LEVEL``,
    checked and normalised here. Powertools reads them itself, and its error for a typo
    ('LOUD', or ' INFO') does not name the variable."""
    env = os.environ if environ is None else environ
    if (env.get("POWERTOOLS_LOG_LEVEL") or "").strip():
        return str(setting("POWERTOOLS_LOG_LEVEL", env))
    legacy = platform("LOG_LEVEL", env)
    if legacy is not None and legacy.strip():
        try:
            return parse_log_level(legacy)
        except ValueError as exc:
            raise ValueError(f"LOG_LEVEL {exc}, got {legacy!r}") from None
    return str(BY_NAME["POWERTOOLS_LOG_LEVEL"].default)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Every variable as the function's init reads them (the settings and the log level);
    ValueError naming the first malformed one. For tools that import the package's modules
    before they would load the settings."""
    load_settings(environ)
    log_level(environ)


def _default(name: str) -> Any:
    return BY_NAME[name].default


@dataclass(frozen=True)
class Settings:
    """Runtime settings. Build with :func:`load_settings`; pass explicitly in tests.

    Defaults are the table's; see :data:`VARIABLES` for what each one means.
    """

    model_path: Path = _default("MODEL_PATH")
    max_bytes: int = _default("MAX_IMAGE_BYTES")
    max_pixels: int = _default("MAX_IMAGE_PIXELS")
    connect_timeout: float = _default("FETCH_CONNECT_TIMEOUT")
    read_timeout: float = _default("FETCH_READ_TIMEOUT")
    fetch_deadline: float = _default("FETCH_DEADLINE")
    max_redirects: int = _default("FETCH_MAX_REDIRECTS")
    batch_limit: int = _default("BATCH_LIMIT")
    num_threads: int = _default("NUM_THREADS")
    allow_private: bool = _default("ALLOW_PRIVATE_URLS")
    s3_urls_over_http: bool = _default("S3_URLS_OVER_HTTP")
    unsure_threshold: float = _default("UNSURE_THRESHOLD")
    results_prefix: str = _default("RESULTS_PREFIX")
    upload_prefix: str = _default("UPLOAD_PREFIX")
    # Sent on every image fetch: names the software and what it does, no made-up contact URL.
    user_agent: str = f"yogapose/{__version__} (yoga-pose image classifier; AWS Lambda)"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (or a given mapping, for tests).

    Raises ValueError naming the variable when a value is malformed: a misconfigured
    function should fail its init loudly rather than serve with a surprising limit.
    """
    env = os.environ if environ is None else environ
    values = {v.name: v.read(env) for v in VARIABLES if v.attr is not None or v.parse is not None}
    upload, results = values["UPLOAD_PREFIX"], values["RESULTS_PREFIX"]
    if upload and (upload.startswith(results) or results.startswith(upload)):
        raise ValueError(
            f"RESULTS_PREFIX {results!r} and UPLOAD_PREFIX {upload!r} must not nest: results "
            "under the upload prefix would trigger again, uploads under the results prefix are "
            "never classified"
        )
    return Settings(**{v.attr: values[v.name] for v in VARIABLES if v.attr is not None})
