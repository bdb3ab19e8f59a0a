"""The single-page web app served on ``GET /`` and the security headers that go with it.

The page is static, so its inline ``<script>`` and ``<style>`` are allowed by their sha256
hashes instead of ``'unsafe-inline'``: any injected or modified script would not run. The
hashes are computed from the file itself at import, so editing the page never leaves a
stale policy behind.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

_PAGE_PATH = Path(__file__).with_name("index.html")
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@lru_cache(maxsize=1)
def index_html() -> str:
    """The page's HTML (read once, then cached for the life of the execution environment)."""
    return _PAGE_PATH.read_text(encoding="utf-8")


def _csp_hashes(html: str, tag: str) -> list[str]:
    hashes = []
    for found_tag, body in _INLINE.findall(html):
        if found_tag == tag:
            digest = hashlib.sha256(body.encode("utf-8")).digest()
            hashes.append("'sha256-" + base64.b64encode(digest).decode("ascii") + "'")
    if not hashes:
        raise RuntimeError(f"index.html has no inline <{tag}>: the CSP would be wrong")
    return hashes


def _build_csp(html: str) -> str:
    directives = [
        "default-src 'none'",
        "script-src " + " ".join(_csp_hashes(html, "script")),
        "style-src " + " ".join(_csp_hashes(html, "style")),
        # The chosen photo is shown from a blob: URL; a pasted https link is shown directly.
        "img-src 'self' data: blob: https:",
        # Only this function's own /predict and /health.
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


#: Value of the ``Content-Security-Policy`` header for ``GET /``.
CONTENT_SECURITY_POLICY: str = _build_csp(index_html())

#: Every header the edge should send with the page (``GET /``).
PAGE_HEADERS: dict[str, str] = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is tiny but changes with each deploy; revalidate rather than cache stale JS.
    "Cache-Control": "no-cache",
}

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_HEADERS", "index_html"]
