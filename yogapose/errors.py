"""Typed errors: each carries a stable machine-readable code and the HTTP status it maps to.

Direct invokes see the exception itself (type + message); HTTP callers see
``{"error": {"code": ..., "message": ...}}`` with ``http_status``.
"""

from __future__ import annotations


class PoseError(Exception):
    """Base class of every error the function reports to a caller."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class BadRequest(PoseError):
    """Malformed event/JSON, missing or mistyped field, bad base64."""

    code = "bad_request"
    http_status = 400


class TargetNotAllowed(PoseError):
    """URL scheme or resolved address is not allowed (SSRF guard)."""

    code = "target_not_allowed"
    http_status = 403


class NotFound(PoseError):
    code = "not_found"
    http_status = 404


class MethodNotAllowed(PoseError):
    code = "method_not_allowed"
    http_status = 405


class PayloadTooLarge(PoseError):
    """Image, download or request body over the configured byte limit."""

    code = "payload_too_large"
    http_status = 413


class UnsupportedImage(PoseError):
    """Not an image, or an image format outside the allow-list."""

    code = "unsupported_media_type"
    http_status = 415


class UnusableImage(PoseError):
    """The image decodes but cannot be used (too many pixels, truncated, degenerate)."""

    code = "unprocessable_image"
    http_status = 422


class UpstreamError(PoseError):
    """The image host answered with an error status, bad TLS, or broke the connection."""

    code = "upstream_error"
    http_status = 502


class UpstreamTimeout(PoseError):
    """The image host did not answer within the timeouts/deadline."""

    code = "upstream_timeout"
    http_status = 504


def _codes(cls: type[PoseError]) -> set[tuple[str, int]]:
    found = {(cls.code, cls.http_status)}
    for sub in cls.__subclasses__():
        found |= _codes(sub)
    return found


#: Codes of the errors that are not the input's fault (5xx: the function, an image host, S3
#: or the time budget), so the same input may succeed later. Classify on upload leaves such
#: an object for S3's retry instead of writing its failure as the result.
RETRYABLE_CODES = frozenset(code for code, status in _codes(PoseError) if status >= 500)


#: The most of the caller's own text (a path, a header, a field name) one error message repeats.
ECHO_CHARS = 40


def echo(text: object, width: int = ECHO_CHARS) -> str:
    """The caller's text for an error message, cut to ``width`` characters (``...`` marks a
    cut): a message must not grow with the request, or a 4 MB path or header comes back
    several times that size as JSON (repr and escapes), over Lambda's 6 MB answer."""
    shown = str(text)
    return shown if len(shown) <= width else shown[:width] + "..."
