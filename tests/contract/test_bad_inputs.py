"""A corpus of bad (and awkward-but-valid) inputs through the real ``lambda_handler``.

Each case gets its documented outcome: an HTTP status with a JSON error body (HTTP events)
or a typed exception (direct invokes), never a 500 or a crash; awkward-but-valid images
(16-bit PNG, CMYK JPEG, animated GIF, palette PNG with transparency) work. Afterwards the
same handler still answers a good request correctly.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from tests.conftest import b64, image_bytes
from tests.contract.test_hostile import jpeg_with_comments, many_scan_jpeg, progressive_jpeg_claiming
from yogapose.errors import (
    BadRequest,
    PayloadTooLarge,
    PoseError,
    TargetNotAllowed,
    UnsupportedImage,
    UnusableImage,
    UpstreamError,
)

OK = "ok"
OK_BATCH_ERRORS = "ok-batch-errors"  # a batch answer whose items are all errors (none internal)
TEN_MB = 10 * 1024 * 1024


# ------------------------------------------------------------------ crafted files


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb)."""
    data = image_bytes("PNG", size=(8, 8))
    assert data[12:16] == b"IHDR"
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return data[:16] + bytes(ihdr) + crc + data[33:]


def gif_with_declared_size(width: int, height: int) -> bytes:
    data = bytearray(image_bytes("GIF", size=(8, 8)))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def tiny_png(size=(1, 1)) -> bytes:
    return image_bytes("PNG", size=size)


SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="400" height="300">'
       b'<rect width="400" height="300" fill="red"/></svg>')
HTML = b"<!doctype html><html><head><title>pose</title></head><body><img src=x></body></html>"
PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Count 0>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF\n")


# ------------------------------------------------------------------ the corpus


@dataclass
class Ctx:
    images: dict[str, bytes]
    url: Callable[[str], str]
    event: Callable[[str], dict]

    def http(self, method: str = "POST", path: str = "/predict", body: bytes | str | None = None,
             content_type: str | None = "application/json", base64_flag: bool | None = None,
             **overrides: Any) -> dict:
        """A Function URL event (fixture shape) with the given request line and body."""
        ev = self.event("function_url_post_json")
        ev["rawPath"] = ev["requestContext"]["http"]["path"] = path
        ev["requestContext"]["http"]["method"] = method
        ev["headers"].pop("content-type", None)
        if content_type is not None:
            ev["headers"]["content-type"] = content_type
        if isinstance(body, bytes):
            flag = True if base64_flag is None else base64_flag
            ev["body"] = b64(body) if flag else body.decode("latin-1")
            ev["isBase64Encoded"] = flag
        else:
            ev["body"] = body
            ev["isBase64Encoded"] = bool(base64_flag)
        ev.update(overrides)
        return ev

    def http_json(self, payload: Any, **kw: Any) -> dict:
        return self.http(body=json.dumps(payload), **kw)

    def raw(self, name_or_bytes: str | bytes, content_type: str) -> dict:
        data = self.images[name_or_bytes] if isinstance(name_or_bytes, str) else name_or_bytes
        return self.http(body=data, content_type=content_type)


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], Any]
    expect: Any  # HTTP status (int), PoseError subclass (direct), or OK
    env: dict[str, str] = field(default_factory=dict)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


CASES = [
    # --- malformed direct events
    Case("direct-none", lambda c: None, BadRequest),
    Case("direct-list", lambda c: [{"url": "https://example.com/a.jpg"}], BadRequest),
    Case("direct-string", lambda c: "https://example.com/a.jpg", BadRequest),
    Case("direct-int", lambda c: 42, BadRequest),
    Case("direct-empty-object", lambda c: {}, BadRequest),
    Case("direct-unknown-field", lambda c: {"link": "https://example.com/a.jpg"}, BadRequest),
    Case("direct-mixed-fields", lambda c: {"url": c.url("ok.jpg"), "image": b64(c.images["jpeg"])}, BadRequest),
    Case("direct-url-number", lambda c: {"url": 123}, BadRequest),
    Case("direct-url-null", lambda c: {"url": None}, BadRequest),
    Case("direct-url-empty", lambda c: {"url": ""}, BadRequest),
    Case("direct-url-object", lambda c: {"url": {"href": "https://example.com/a.jpg"}}, BadRequest),
    Case("direct-image-empty", lambda c: {"image": "   "}, BadRequest),
    Case("direct-image-list", lambda c: {"image": [b64(c.images["jpeg"])]}, BadRequest),
    Case("direct-image-bad-base64", lambda c: {"image": "this is *not* base64!"}, BadRequest),
    Case("direct-image-only-padding", lambda c: {"image": "===="}, BadRequest),
    Case("direct-urls-string", lambda c: {"urls": "https://example.com/a.jpg"}, BadRequest),
    Case("direct-urls-empty", lambda c: {"urls": []}, BadRequest),
    Case("direct-urls-nested-number", lambda c: {"urls": [c.url("ok.jpg"), 7]}, BadRequest),
    Case("direct-images-nested-object", lambda c: {"images": [{"image": "abc"}]}, BadRequest),
    Case("direct-urls-over-batch-limit", lambda c: {"urls": [c.url("ok.jpg")] * 17}, BadRequest),
    Case("direct-images-over-batch-limit", lambda c: {"images": ["AAAA"] * 3}, BadRequest,
         env={"BATCH_LIMIT": "2"}),
    # --- URL targets
    Case("direct-url-ftp", lambda c: {"url": "ftp://example.com/pose.jpg"}, TargetNotAllowed),
    Case("direct-url-file", lambda c: {"url": "file:///etc/passwd"}, TargetNotAllowed),
    Case("direct-url-no-scheme", lambda c: {"url": "example.com/pose.jpg"}, TargetNotAllowed),
    Case("direct-url-metadata-service", lambda c: {"url": "http://169.254.169.254/latest/meta-data/"},
         TargetNotAllowed, env={"ALLOW_PRIVATE_URLS": "false"}),
    Case("direct-url-loopback-by-default", lambda c: {"url": c.url("ok.jpg")}, TargetNotAllowed,
         env={"ALLOW_PRIVATE_URLS": "false"}),
    Case("direct-url-404", lambda c: {"url": c.url("missing.jpg")}, UpstreamError),
    Case("direct-url-html-page", lambda c: {"url": c.url("page.html")}, UnsupportedImage),
    Case("direct-url-empty-file", lambda c: {"url": c.url("empty.jpg")}, UnsupportedImage),
    Case("direct-url-lone-surrogate", lambda c: {"url": "https://example.com/\ud800.jpg"}, BadRequest),
    Case("direct-urls-lone-surrogate-item", lambda c: {"urls": ["\udfff"]}, OK_BATCH_ERRORS),
    # --- image payloads, direct
    Case("direct-svg", lambda c: {"image": b64(SVG)}, UnsupportedImage),
    Case("direct-html", lambda c: {"image": b64(HTML)}, UnsupportedImage),
    Case("direct-pdf", lambda c: {"image": b64(PDF)}, UnsupportedImage),
    Case("direct-1x1-png", lambda c: {"image": b64(tiny_png())}, UnusableImage),
    Case("direct-truncated-jpeg", lambda c: {"image": b64(c.images["jpeg_big"][: len(c.images["jpeg_big"]) // 2])},
         UnusableImage),
    Case("direct-png-bomb", lambda c: {"image": b64(png_with_declared_size(50_000, 50_000))}, UnusableImage),
    Case("direct-gif-bomb", lambda c: {"image": b64(gif_with_declared_size(65_535, 65_535))}, UnusableImage),
    Case("direct-image-over-limit", lambda c: {"image": "A" * (TEN_MB // 3 * 4 + 400)}, PayloadTooLarge),
    Case("direct-16bit-png", lambda c: {"image": b64(c.images["png16"])}, OK),
    Case("direct-cmyk-jpeg", lambda c: {"image": b64(c.images["cmyk_jpeg"])}, OK),
    Case("direct-animated-gif", lambda c: {"image": b64(c.images["gif_animated"])}, OK),
    Case("direct-palette-png-transparency", lambda c: {"image": b64(c.images["png_palette_alpha"])}, OK),
    # --- malformed HTTP events and bodies
    Case("http-invalid-json", lambda c: c.http(body="{not json"), 400),
    Case("http-json-array", lambda c: c.http(body="[1, 2]"), 400),
    Case("http-json-string", lambda c: c.http(body='"https://example.com/a.jpg"'), 400),
    Case("http-json-null", lambda c: c.http(body="null"), 400),
    Case("http-json-deeply-nested", lambda c: c.http(body=_nested(100_000)), 400),
    Case("http-body-missing", lambda c: c.http(body=None), 400),
    Case("http-body-whitespace", lambda c: c.http(body="  \n "), 400),
    Case("http-json-unknown-field", lambda c: c.http_json({"photo": "https://example.com/a.jpg"}), 400),
    Case("http-json-url-empty", lambda c: c.http_json({"url": ""}), 400),
    Case("http-json-url-wrong-type", lambda c: c.http_json({"url": ["https://example.com/a.jpg"]}), 400),
    Case("http-json-batch-over-limit", lambda c: c.http_json({"urls": ["https://example.com/a.jpg"] * 17}), 400),
    Case("http-json-images-nested-wrong-type", lambda c: c.http_json({"images": [[b64(c.images["jpeg"])]]}), 400),
    Case("http-bad-base64-body", lambda c: c.http(body="%%%%", content_type="image/jpeg", base64_flag=True), 400),
    Case("http-invalid-utf8-json",
         lambda c: c.http(body=b"{\"url\": \"\xff\xfe\"}", content_type="application/json"), 400),
    Case("http-isbase64-not-bool", lambda c: c.http(body="{}", isBase64Encoded="yes"), 400),
    Case("http-body-not-string", lambda c: {**c.http(body="{}"), "body": 12345}, 400),
    Case("http-headers-not-object", lambda c: c.http(body="{}", headers=["content-type", "application/json"]), 400),
    Case("http-request-context-without-http", lambda c: {**c.http(body="{}"), "requestContext": {"http": None}}, 400),
    Case("http-json-huge-body", lambda c: c.http(body='{"image": "' + "A" * (TEN_MB // 3 * 4 + 100_000) + '"}'), 413),
    Case("http-raw-huge-body",
         lambda c: c.http(body=b"\xff\xd8" + b"\0" * (TEN_MB + 10), content_type="image/jpeg"), 413),
    Case("http-private-url-by-default", lambda c: c.http_json({"url": "http://10.0.0.1/pose.jpg"}), 403,
         env={"ALLOW_PRIVATE_URLS": "false"}),
    Case("http-upstream-404", lambda c: c.http_json({"url": c.url("missing.jpg")}), 502),
    Case("http-json-url-lone-surrogate", lambda c: c.http(body='{"url": "https://example.com/\\ud800"}'), 400),
    # --- wrong media
    Case("http-zero-byte-jpeg", lambda c: c.raw(b"", "image/jpeg"), 400),  # an empty body, whatever its type
    Case("http-svg-content-type", lambda c: c.raw(SVG, "image/svg+xml"), 415),
    Case("http-svg-as-jpeg", lambda c: c.raw(SVG, "image/jpeg"), 415),
    Case("http-html-body", lambda c: c.raw(HTML, "text/html"), 415),
    Case("http-pdf-body", lambda c: c.raw(PDF, "application/pdf"), 415),
    Case("http-pdf-as-png", lambda c: c.raw(PDF, "image/png"), 415),
    Case("http-multipart-form", lambda c: c.raw(b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"), 415),
    Case("http-tiff-content-type", lambda c: c.raw(image_bytes("TIFF"), "image/tiff"), 415),
    Case("http-text-plain-garbage", lambda c: c.raw(b"hello there", "text/plain"), 415),
    Case("http-1x1-png", lambda c: c.raw(tiny_png(), "image/png"), 422),
    Case("http-4x300-png", lambda c: c.raw(tiny_png((4, 300)), "image/png"), 422),
    Case("http-png-bomb", lambda c: c.raw(png_with_declared_size(100_000, 100_000), "image/png"), 422),
    # a strip: under the pixel limit, but its long side would be kept whole (~570 MB at 8 x 5 M)
    Case("http-png-strip", lambda c: c.raw(png_with_declared_size(8, 5_000_000), "image/png"), 422),
    Case("direct-png-strip", lambda c: {"image": b64(png_with_declared_size(5_000, 240))}, UnusableImage),
    Case("http-gif-bomb", lambda c: c.raw(gif_with_declared_size(65_535, 65_535), "image/gif"), 422),
    Case("http-truncated-jpeg", lambda c: c.raw(c.images["jpeg_big"][:3000], "image/jpeg"), 422),
    Case("http-jpeg-thousands-of-scans", lambda c: c.raw(many_scan_jpeg((2000, 2000), 1000), "image/jpeg"), 422),
    Case("http-jpeg-tiny-segments", lambda c: c.raw(jpeg_with_comments(100_000), "image/jpeg"), 422),
    Case("http-progressive-jpeg-coefficient-bomb",
         lambda c: c.raw(progressive_jpeg_claiming((6000, 6000)), "image/jpeg"), 422),
    Case("http-16bit-png", lambda c: c.raw("png16", "image/png"), 200),
    Case("http-cmyk-jpeg", lambda c: c.raw("cmyk_jpeg", "image/jpeg"), 200),
    Case("http-animated-gif", lambda c: c.raw("gif_animated", "image/gif"), 200),
    Case("http-palette-png-transparency", lambda c: c.raw("png_palette_alpha", "image/png"), 200),
    # --- routing
    Case("http-unknown-route", lambda c: c.http("GET", "/wp-admin", None, None), 404),
    Case("http-unknown-route-post", lambda c: c.http("POST", "/predict/v2", "{}"), 404),
    Case("http-get-predict", lambda c: c.http("GET", "/predict", None, None), 405),
    Case("http-delete-predict", lambda c: c.http("DELETE", "/predict", None, None), 405),
    Case("http-put-root", lambda c: c.http("PUT", "/", "{}"), 405),
    Case("http-patch-health", lambda c: c.http("PATCH", "/health", "{}"), 405),
]


# ------------------------------------------------------------------ running a case


@pytest.fixture
def ctx(httpserver, images, event) -> Ctx:
    httpserver.expect_request("/ok.jpg").respond_with_data(images["jpeg"], content_type="image/jpeg")
    httpserver.expect_request("/missing.jpg").respond_with_data("not here", status=404)
    httpserver.expect_request("/page.html").respond_with_data(HTML, content_type="text/html")
    httpserver.expect_request("/empty.jpg").respond_with_data(b"", content_type="image/jpeg")
    return Ctx(images, lambda name: httpserver.url_for("/" + name), event)


def check(case: Case, handler, ctx: Ctx, monkeypatch) -> None:
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    ev = case.build(ctx)
    is_http = isinstance(case.expect, int)
    if not is_http:
        if case.expect == OK:
            result = handler(ev, None)
            assert sum(result.values()) == pytest.approx(1.0) and len(result) == 6
            return
        if case.expect == OK_BATCH_ERRORS:
            result = handler(ev, None)
            assert result and all(set(r) == {"error"} for r in result), result
            assert all(r["error"]["code"] not in ("internal_error", "upstream_error") for r in result)
            return
        with pytest.raises(PoseError) as info:
            handler(ev, None)
        assert type(info.value) is case.expect, f"{case.id}: {info.value!r}"
        assert info.value.message and "Traceback" not in info.value.message
        return
    resp = handler(ev, None)
    assert resp["statusCode"] == case.expect, f"{case.id}: {resp['body'][:300]}"
    assert resp["isBase64Encoded"] is False
    body = json.loads(resp["body"])
    if case.expect == 200:
        assert len(body) == 6 and sum(body.values()) == pytest.approx(1.0)
        return
    assert resp["headers"]["Content-Type"] == "application/json"
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"] != "internal_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in resp["body"]


def test_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, handler, ctx: Ctx, monkeypatch):
    check(case, handler, ctx, monkeypatch)


def test_still_serving_after_the_whole_corpus(handler, ctx: Ctx, images, monkeypatch):
    """Run every case back to back in one process, then a good request must still work."""
    expected = handler({"image": b64(images["jpeg"])}, None)
    for case in CASES:
        with monkeypatch.context() as mp:
            check(case, handler, ctx, mp)
    assert handler({"image": b64(images["jpeg"])}, None) == expected
    assert handler({"url": ctx.url("ok.jpg")}, None) == expected
    resp = handler(ctx.raw("jpeg", "image/jpeg"), None)
    assert resp["statusCode"] == 200 and json.loads(resp["body"]) == expected


def test_crafted_bombs_are_small_on_disk():
    """The bombs are bombs by their headers, not by size: the guard must not decode them."""
    assert len(png_with_declared_size(100_000, 100_000)) < 1_000
    assert len(gif_with_declared_size(65_535, 65_535)) < 1_000
    with Image.open(io.BytesIO(png_with_declared_size(100_000, 100_000))) as img:
        assert img.size == (100_000, 100_000)
