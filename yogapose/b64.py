"""Base64, all of it: the size pre-check, the strict fast path and the two sets of rules.

* **Transport** (:func:`decode_transport`): a body Lambda flagged ``isBase64Encoded``.
  Lambda writes canonical base64, so only the standard alphabet is accepted.
* **Payload** (:func:`decode_payload`): an ``image`` / ``images[i]`` field a client wrote.
  Clients differ, so a ``data:`` URL prefix, line breaks, the URL-safe alphabet and missing
  padding are tolerated; anything else is still refused, never guessed at.

Either way the size is checked on the text before anything is decoded, and decoding
itself is strict. A 12 MP photo is ~4.4 MB of base64: CPython's ``binascii`` decodes it in
~12 ms, a quarter of an inference; ``pybase64`` (SIMD, BSD licence) in well under 1 ms with
the same strictness, so it is used when installed (the Lambda image installs it), with
``binascii``'s strict mode as the stand-in. Anything the fast decoder refuses is retried
with ``binascii`` so the set of accepted strings never depends on which one is installed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from .errors import BadRequest, PayloadTooLarge


def _simd_decoder() -> Callable[..., bytes] | None:
    try:
        from pybase64 import b64decode
    except ImportError:  # pragma: no cover - the fallback test patches the result instead
        return None
    return b64decode


_simd_b64decode = _simd_decoder()

#: Which decoder the fast path uses (the tests check the installed one is pybase64).
BACKEND = "pybase64" if _simd_b64decode is not None else "binascii"

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_strict(text: str | bytes) -> bytes:
    """Canonical base64 (standard alphabet, padded, no whitespace) -> bytes.

    Raises ``binascii.Error`` or ``ValueError`` for anything else; callers decide how
    tolerant to be after that.
    """
    if _simd_b64decode is not None:
        try:
            return _simd_b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass  # the reference decoder has the last word, see the module docstring
    return binascii.a2b_base64(text, strict_mode=True)


def decoded_size_bound(chars: int) -> int:
    """Fewest bytes ``chars`` characters of base64 can decode to, less one padding group."""
    return (chars // 4) * 3 - 3


def decode_transport(text: str, limit: int, what: str) -> bytes:
    """An ``isBase64Encoded`` body -> bytes; PayloadTooLarge over ``limit``, else BadRequest."""
    # 4 characters carry 3 bytes: refuse before decoding a huge string.
    if decoded_size_bound(len(text)) > limit:
        raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
    try:
        data = decode_strict(text)  # what Lambda sends: canonical, so this is the fast path
    except (binascii.Error, ValueError):
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{what} is flagged isBase64Encoded but is not valid base64") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes, over the limit of {limit}")
    return data


def decode_payload(text: str, field: str, max_bytes: int) -> bytes:
    """A base64 field a client wrote -> non-empty bytes of at most ``max_bytes``.

    Strict base64 (standard or URL-safe alphabet, optional ``data:`` URL prefix, line
    breaks and missing padding tolerated) with the size checked before decoding.
    """
    match = _DATA_URL.match(text[:256])
    if match:
        text = text[match.end():]
    # Line breaks carry no data (MIME wraps every 76 characters): counted out before refusing.
    if decoded_size_bound(len(text)) > max_bytes and decoded_size_bound(_data_chars(text)) > max_bytes:
        raise PayloadTooLarge(f"field {field!r} decodes to more than the limit of {max_bytes} bytes")
    try:
        # Fast path for canonical base64 (what every client sends): validated while decoding,
        # no regex over the text (base64's validate=True costs ~60 ms for a 12 MP photo).
        data = decode_strict(text)
    except (binascii.Error, ValueError):
        data = _decode_tolerant(text, field)
    if not data:
        raise BadRequest(f"field {field!r} is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"field {field!r} is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def _data_chars(text: str) -> int:
    """Characters of ``text`` that are not whitespace (str.count: no regex, no copy)."""
    return len(text) - sum(text.count(c) for c in " \t\r\n\f\v")


def _decode_tolerant(text: str, field: str) -> bytes:
    """Line breaks, URL-safe alphabet and missing padding, still validated strictly."""
    if _WHITESPACE.search(text):
        text = _WHITESPACE.sub("", text)
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"field {field!r} is not valid base64") from None
