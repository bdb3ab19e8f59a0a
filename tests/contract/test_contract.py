"""The handler's contract for every event shape, through the real ``lambda_handler``.

Images come from a loopback HTTP server (pytest-httpserver) or inline base64; the model is
the tiny test model (production signature, random weights).
"""

from __future__ import annotations

import base64
import codecs
import io
import json
import re

import pytest

from localtools.context import LambdaContext
from tests.conftest import b64
from yogapose.errors import BadRequest, PoseError, UpstreamError
from yogapose.metadata import load_metadata

SERVER_TIMING = re.compile(
    r"^fetch;dur=(\d+(\.\d+)?), decode;dur=(\d+(\.\d+)?), detect;dur=(\d+(\.\d+)?), infer;dur=(\d+(\.\d+)?)$"
)


@pytest.fixture
def meta(tiny_model_path):
    return load_metadata(tiny_model_path)


@pytest.fixture
def image_url(httpserver, images):
    httpserver.expect_request("/poses/pose.jpg").respond_with_data(images["jpeg"], content_type="image/jpeg")
    httpserver.expect_request("/poses/other.jpg").respond_with_data(images["jpeg_other"], content_type="image/jpeg")
    httpserver.expect_request("/poses/pose.png").respond_with_data(images["png_rgba"], content_type="image/png")
    httpserver.expect_request("/poses/missing.jpg").respond_with_data("nope", status=404)
    return lambda name: httpserver.url_for(f"/poses/{name}")


def assert_probabilities(result, labels):
    assert isinstance(result, dict)
    assert list(result) == list(labels), "every label, in metadata order"
    for value in result.values():
        assert type(value) is float
        assert 0.0 <= value <= 1.0
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-9)


def assert_http_ok(resp, meta):
    assert resp["statusCode"] == 200, resp.get("body")
    headers = resp["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Model-Version"] == meta.sha256[:12]
    assert headers["Cache-Control"] == "no-store"
    assert SERVER_TIMING.match(headers["Server-Timing"]), headers["Server-Timing"]
    assert resp["isBase64Encoded"] is False
    return json.loads(resp["body"])


def with_json_body(ev: dict, payload: dict) -> dict:
    ev["body"] = json.dumps(payload)
    return ev


# ---------------------------------------------------------------- direct invokes


def test_direct_url(handler, image_url, meta):
    result = handler({"url": image_url("pose.jpg")}, None)
    assert_probabilities(result, meta.labels)


def test_direct_base64_image(handler, images, meta):
    result = handler({"image": b64(images["jpeg"])}, None)
    assert_probabilities(result, meta.labels)
    # The same photo by URL or inline gives the same answer.
    assert result == handler({"image": b64(images["jpeg"])}, None)


def test_direct_url_and_inline_image_agree(handler, image_url, images):
    by_url = handler({"url": image_url("pose.jpg")}, None)
    inline = handler({"image": b64(images["jpeg"])}, None)
    assert by_url == inline


def test_direct_base64_variants_are_accepted(handler, images):
    """Data URLs, wrapped lines, URL-safe alphabet and missing padding all decode."""
    plain = b64(images["png"])
    expected = handler({"image": plain}, None)
    wrapped = "\n".join(plain[i:i + 76] for i in range(0, len(plain), 76))
    urlsafe = base64.urlsafe_b64encode(images["png"]).decode().rstrip("=")
    for variant in ("data:image/png;base64," + plain, wrapped, urlsafe):
        assert handler({"image": variant}, None) == expected


def test_different_images_give_different_answers(handler, images):
    a = handler({"image": b64(images["jpeg"])}, None)
    b = handler({"image": b64(images["jpeg_other"])}, None)
    assert a != b


def test_direct_batch_urls_with_one_failing_item(handler, image_url, meta):
    urls = [image_url("pose.jpg"), image_url("missing.jpg"), image_url("other.jpg")]
    results = handler({"urls": urls}, None)
    assert isinstance(results, list) and len(results) == 3
    assert_probabilities(results[0], meta.labels)
    assert_probabilities(results[2], meta.labels)
    assert results[0] == handler({"url": urls[0]}, None), "order is kept"
    assert results[2] == handler({"url": urls[2]}, None), "order is kept"
    assert set(results[1]) == {"error"}
    assert results[1]["error"]["code"] == UpstreamError.code
    assert "404" in results[1]["error"]["message"]


def test_direct_batch_images_with_one_failing_item(handler, images, meta):
    batch = [b64(images["jpeg"]), "%%% not base64 %%%", b64(images["png_rgba"]), b64(b"<svg/>")]
    results = handler({"images": batch}, None)
    assert len(results) == 4
    assert_probabilities(results[0], meta.labels)
    assert_probabilities(results[2], meta.labels)
    assert results[1]["error"]["code"] == "bad_request"
    assert "images[1]" in results[1]["error"]["message"]
    assert results[3]["error"]["code"] == "unsupported_media_type"


def test_every_supported_format(handler, images, meta):
    for name in ("jpeg", "jpeg_big", "png", "png_rgba", "webp", "bmp", "gif", "gray_png"):
        assert_probabilities(handler({"image": b64(images[name])}, None), meta.labels)


def test_direct_errors_are_typed_exceptions(handler):
    with pytest.raises(BadRequest, match="'url' must be a string"):
        handler({"url": 42}, None)
    with pytest.raises(BadRequest, match="unknown field"):
        handler({"link": "https://example.com/x.jpg"}, None)


def test_a_direct_error_carries_no_frames_of_the_package(handler, image_url):
    """Lambda's runtime sends the raised error's stackTrace to the caller along with its type
    and message: it must not walk the caller through fetch.py and imaging.py."""
    import traceback

    from yogapose.errors import TargetNotAllowed

    with pytest.raises(TargetNotAllowed) as info:
        handler({"url": "ftp://example.com/a.jpg"}, None)
    files = {frame.filename for frame in traceback.extract_tb(info.value.__traceback__)}
    assert not any(name.endswith(("fetch.py", "app.py", "edge.py")) for name in files), files


def test_unknown_field_names_are_quoted_short_whatever_their_size(handler):
    """The error names a few of the caller's fields, each cut short: a 4 MB field name must
    not come back as a 12 MB JSON answer (over Lambda's 6 MB response limit)."""
    with pytest.raises(BadRequest) as info:
        handler({"\u00e9" * 2_000_000: 1, **{f"extra{i}": 1 for i in range(500)}}, None)
    message = info.value.message
    assert len(message) < 600, len(message)
    assert "unknown field(s)" in message and "and 496 more" in message
    with pytest.raises(BadRequest, match="unknown field.s. 1, None"):  # ipython may pass any key
        handler({1: "x", None: 2}, None)


def test_the_handler_documents_itself_for_ipython(handler):
    """help(lambda_function) did not list lambda_handler, and its signature and name were the
    inner function's: (event, stats: RequestStats), 'handle_event'."""
    import inspect
    import pydoc

    import lambda_function

    assert list(inspect.signature(handler).parameters) == ["event", "context"]
    assert handler.__name__ == "lambda_handler" and "direct invoke" in (handler.__doc__ or "")
    text = pydoc.render_doc(lambda_function, renderer=pydoc.plaintext)
    assert "lambda_handler(event: Any, context: Any = None)" in text


def test_predict_bytes_says_it_wants_bytes(handler, images):
    """From ipython, predict_bytes("photo.jpg") failed deep inside with 'tuple for startswith
    must only contain str, not bytes'."""
    from yogapose.app import predict_bytes

    with pytest.raises(TypeError, match=r"image file's bytes, e.g. open\(path, 'rb'\).read\(\); got str"):
        predict_bytes("photo.jpg")  # type: ignore[arg-type]
    assert predict_bytes(memoryview(images["jpeg"])) == predict_bytes(images["jpeg"])


def test_an_event_holding_objects_no_json_has_is_a_typed_error(handler):
    """From ipython: reading the event's kind compared a numpy array, whose truth value
    raises; that ValueError escaped untyped, with the package's frames."""
    np = pytest.importorskip("numpy")
    with pytest.raises(PoseError) as info:
        handler({"version": np.array(["2.0", "x"]), "url": "https://example.com/a.jpg"}, None)
    assert info.value.code == "internal_error"  # typed, logged with its frames


# ---------------------------------------------------------------- HTTP events


@pytest.mark.parametrize("where", ["path", "method", "content-type", "details"])
def test_error_messages_quote_the_callers_text_short(handler, event, where):
    """404s, 405s, 415s and 400s repeated the whole path, method, Content-Type or query value:
    2.4 MB of them came back as a 7.2 MB answer, over Lambda's 6 MB."""
    ev = event("function_url_post_json")
    huge = "\U000e0001" * 600_000
    if where == "path":
        ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/" + huge
    elif where == "method":
        ev["requestContext"]["http"]["method"] = "X" + huge
    elif where == "content-type":
        ev["headers"]["content-type"] = "x/" + huge
    else:
        ev["rawQueryString"] = "details=" + huge
        ev["queryStringParameters"] = {"details": huge}
    resp = handler(ev, None)
    assert 400 <= resp["statusCode"] < 500
    assert len(resp["body"]) < 1000, len(resp["body"])
    assert json.loads(resp["body"])["error"]["message"]


def test_function_url_json_body(handler, event, image_url, meta):
    ev = with_json_body(event("function_url_post_json"), {"url": image_url("pose.jpg")})
    body = assert_http_ok(handler(ev, None), meta)
    assert_probabilities(body, meta.labels)
    assert body == handler({"url": image_url("pose.jpg")}, None), "same JSON as a direct invoke"


def test_function_url_raw_jpeg_body_base64_flagged(handler, event, images, meta):
    ev = event("function_url_post_image")
    ev["body"] = b64(images["jpeg"])
    body = assert_http_ok(handler(ev, None), meta)
    assert_probabilities(body, meta.labels)
    assert body == handler({"image": b64(images["jpeg"])}, None)


@pytest.mark.parametrize(("name", "content_type"), [
    ("png_rgba", "image/png"), ("webp", "image/webp"), ("gif", "image/gif"), ("bmp", "image/bmp"),
    ("jpeg", "image/jpeg; charset=binary"), ("jpeg", "application/octet-stream"),
])
def test_function_url_raw_bodies_of_each_type(handler, event, images, meta, name, content_type):
    ev = event("function_url_post_image")
    ev["headers"]["content-type"] = content_type
    ev["body"] = b64(images[name])
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_function_url_raw_bytes_without_content_type_are_sniffed(handler, event, images, meta):
    """``curl --data-binary @photo.jpg`` sends form-urlencoded: still an image."""
    ev = event("function_url_post_image")
    ev["headers"]["content-type"] = "application/x-www-form-urlencoded"
    ev["body"] = b64(images["jpeg"])
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)
    del ev["headers"]["content-type"]
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


@pytest.mark.parametrize("body", [b"url=https%3A%2F%2Fexample.com%2Fa.jpg", b"image=iVBORw0KGgo",
                                  b"submit=Go&URL=https%3A%2F%2Fexample.com%2Fa.jpg",
                                  b"urls%5B%5D=https%3A%2F%2Fexample.com%2Fa.jpg", b"a=1;url=x"])
def test_form_fields_get_a_hint_to_send_json(handler, event, body):
    """curl -d url=https://... (or an HTML form) was sniffed as image bytes: a 415 'not a
    supported image' that did not say what to send instead."""
    ev = event("function_url_post_json")
    ev["headers"]["content-type"] = "application/x-www-form-urlencoded"
    ev["body"] = b64(body)
    ev["isBase64Encoded"] = True
    resp = handler(ev, None)
    assert resp["statusCode"] == 400
    assert "send JSON" in json.loads(resp["body"])["error"]["message"]


def test_a_gif_whose_header_reads_like_a_form_field_is_still_an_image(handler, event, meta):
    """curl --data-binary @x.gif without -H: a 317-pixel-wide GIF starts 'GIF89a=\x01', and a
    comment holding '&url=' made it a 400 'form fields are not accepted'."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (317, 400), (120, 80, 40)).save(buf, "GIF", comment=b"&url=x")
    assert buf.getvalue()[:7] == b"GIF89a="
    ev = event("function_url_post_image")
    ev["headers"]["content-type"] = "application/x-www-form-urlencoded"
    ev["body"] = b64(buf.getvalue())
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_a_json_body_with_a_byte_order_mark_is_json(handler, event, images, meta, content_type):
    """A request file saved by Windows Notepad starts with a UTF-8 BOM: as text/plain it was
    taken for image bytes (415)."""
    ev = event("function_url_post_json")
    ev["headers"]["content-type"] = content_type
    ev["body"] = b64(codecs.BOM_UTF8 + json.dumps({"image": b64(images["png"])}).encode())
    ev["isBase64Encoded"] = True
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_function_url_json_body_base64_flagged(handler, event, images, meta):
    ev = event("function_url_post_json")
    ev["body"] = b64(json.dumps({"image": b64(images["png"])}).encode())
    ev["isBase64Encoded"] = True
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_function_url_post_root_predicts_too(handler, event, image_url, meta):
    ev = with_json_body(event("function_url_post_json"), {"url": image_url("pose.jpg")})
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/"
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_function_url_batch(handler, event, image_url, images, meta):
    ev = with_json_body(event("function_url_post_json"), {"urls": [image_url("pose.jpg"), image_url("missing.jpg")]})
    body = assert_http_ok(handler(ev, None), meta)
    assert_probabilities(body[0], meta.labels)
    assert body[1]["error"]["code"] == "upstream_error"
    ev = with_json_body(event("function_url_post_json"), {"images": [b64(images["jpeg"]), b64(images["png"])]})
    body = assert_http_ok(handler(ev, None), meta)
    assert [set(item) for item in body] == [set(meta.labels)] * 2


def test_api_gateway_v2(handler, event, image_url, meta):
    ev = with_json_body(event("apigw_v2_post_predict"), {"url": image_url("pose.jpg")})
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_api_gateway_v2_named_stage_prefix_is_stripped(handler, event, image_url, meta):
    ev = with_json_body(event("apigw_v2_post_predict"), {"url": image_url("pose.jpg")})
    ev["requestContext"]["stage"] = "prod"
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/prod/predict"
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_api_gateway_v1(handler, event, image_url, meta):
    ev = with_json_body(event("apigw_v1_post_predict"), {"url": image_url("pose.jpg")})
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_api_gateway_v1_binary_body(handler, event, images, meta):
    ev = event("apigw_v1_post_predict")
    ev["headers"]["Content-Type"] = "image/png"
    ev["body"] = b64(images["png"])
    ev["isBase64Encoded"] = True
    assert_probabilities(assert_http_ok(handler(ev, None), meta), meta.labels)


def test_server_timing_counts_the_fetch(handler, event, image_url, meta):
    ev = with_json_body(event("function_url_post_json"), {"url": image_url("pose.jpg")})
    resp = handler(ev, None)
    assert_http_ok(resp, meta)
    durations = [float(m) for m in re.findall(r"dur=([\d.]+)", resp["headers"]["Server-Timing"])]
    assert len(durations) == 4  # fetch, decode, detect, infer
    assert durations[3] > 0.0, "inference takes some time"


# ---------------------------------------------------------------- other routes


def test_health(handler, event, meta):
    resp = handler(event("function_url_get_health"), None)
    assert resp["statusCode"] == 200
    assert resp["headers"]["Content-Type"] == "application/json"
    assert resp["headers"]["X-Model-Version"] == meta.version
    body = json.loads(resp["body"])
    assert body["status"] == "ok"
    assert body["model"]["name"] == meta.name
    assert body["model"]["version"] == meta.version
    assert body["model"]["labels"] == list(meta.labels)
    assert body["model"]["input_shape"] == list(meta.input_shape)
    assert body["unsure_threshold"] == 0.5


def test_get_root_serves_the_page(handler, event):
    web = pytest.importorskip("yogapose.web", reason="the web page module is not in this build")
    resp = handler(event("function_url_get_root"), None)
    assert resp["statusCode"] == 200
    assert resp["headers"]["Content-Type"].startswith("text/html")
    assert resp["body"] == web.index_html()
    assert "Content-Security-Policy" in resp["headers"]
    assert resp["headers"]["Vary"] == "Accept"  # the same URL answers JSON to API clients


def test_get_root_asking_for_json_gets_health(handler, event, meta):
    ev = event("function_url_get_root")
    ev["headers"]["accept"] = "application/json"
    resp = handler(ev, None)
    assert resp["statusCode"] == 200
    assert json.loads(resp["body"])["model"]["version"] == meta.version
    assert resp["headers"]["Vary"] == "Accept"
    assert "Vary" not in handler(event("function_url_get_health"), None)["headers"]


def test_unknown_route_is_404_json(handler, event):
    ev = event("function_url_get_health")
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/admin"
    resp = handler(ev, None)
    assert resp["statusCode"] == 404
    assert resp["headers"]["Content-Type"] == "application/json"
    assert json.loads(resp["body"])["error"]["code"] == "not_found"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/predict", "POST, OPTIONS"),
    ("DELETE", "/predict", "POST, OPTIONS"),
    ("PUT", "/", "GET, HEAD, POST, OPTIONS"),
    ("POST", "/health", "GET, HEAD, OPTIONS"),
])
def test_wrong_method_is_405_with_allow(handler, event, method, path, allow):
    ev = event("function_url_get_health")
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = path
    ev["requestContext"]["http"]["method"] = method
    resp = handler(ev, None)
    assert resp["statusCode"] == 405
    assert resp["headers"]["Allow"] == allow
    assert json.loads(resp["body"])["error"]["code"] == "method_not_allowed"


def test_options_and_head(handler, event):
    ev = event("function_url_get_health")
    ev["requestContext"]["http"]["method"] = "OPTIONS"
    resp = handler(ev, None)
    assert resp["statusCode"] == 204
    assert resp["headers"]["Allow"] == "GET, HEAD, OPTIONS"
    ev["requestContext"]["http"]["method"] = "HEAD"
    resp = handler(ev, None)
    assert resp["statusCode"] == 200 and resp["body"] == ""
    assert resp["headers"]["Content-Type"] == "application/json"


# ---------------------------------------------------------------- observability


def fake_context(request_id: str = "req-0123") -> LambdaContext:
    """Lambda's context as Powertools reads it (localtools.context: the one stand-in)."""
    return LambdaContext(request_id, function_name="yoga-pose-fn", memory_limit_in_mb=2048)



def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_logs_and_metrics_with_a_lambda_context(handler, image_url, images, meta, capsys, log_stream,
                                                monkeypatch):
    from yogapose import observability

    monkeypatch.setattr(observability, "_cold_start_pending", True)
    secret_url = image_url("pose.jpg") + "?X-Amz-Signature=supersecret"
    handler({"url": secret_url}, fake_context("req-42"))
    out = capsys.readouterr().out
    logged = log_stream.getvalue()
    assert "supersecret" not in out + logged, "query strings never reach the logs"
    lines = _json_lines(out)
    log = next(line for line in _json_lines(logged) if line.get("message") == "request done")
    assert log["function_request_id"] == "req-42"
    assert log["service"] == "yoga-pose"
    assert log["sources"] == [image_url("pose.jpg")]
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for blob in emf for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"FetchMs", "DecodeMs", "InferMs", "TotalMs", "BytesFetched", "PredictedClass", "ColdStart"} <= names
    assert all(d["Namespace"] == "YogaPose" for blob in emf for d in blob["_aws"]["CloudWatchMetrics"])
    predicted = next(blob for blob in emf if "PredictedClass" in blob)
    assert predicted["pose"] in meta.labels
    assert predicted["PredictedClass"] == [1.0]
    fetched = next(blob for blob in emf if "BytesFetched" in blob)
    assert fetched["BytesFetched"] == [float(len(images["jpeg"]))]
    cold = next(blob for blob in emf if "ColdStart" in blob)
    assert cold["function_name"] == "yoga-pose-fn"

    # A second invoke is warm: no second ColdStart metric.
    handler({"url": image_url("pose.jpg")}, fake_context("req-43"))
    assert "ColdStart" not in capsys.readouterr().out


def test_powertools_event_logging_cannot_log_events(monkeypatch, log_stream, capsys):
    """POWERTOOLS_LOGGER_LOG_EVENT=true (a standard Powertools switch) logged whole events:
    image bytes, signed URLs, Authorization headers."""
    from yogapose import observability

    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    wrapped = observability.instrument(lambda event, stats: {"ok": True})  # reads it here
    event = {"image": "SECRETBYTES", "headers": {"authorization": "AWS4-HMAC-SHA256 Signature=topsecret"}}
    assert wrapped(event, fake_context("req-7")) == {"ok": True}
    logged = log_stream.getvalue() + capsys.readouterr().out
    assert "request done" in logged
    assert "SECRETBYTES" not in logged and "topsecret" not in logged


def test_errors_metric_by_code(handler, capsys):
    with pytest.raises(BadRequest):
        handler({"urls": 5}, fake_context())
    lines = _json_lines(capsys.readouterr().out)
    errors = [line for line in lines if "Errors" in line]
    assert errors and errors[0]["code"] == "bad_request"


def test_direct_call_without_context_prints_no_metrics(handler, images, capsys, log_stream):
    handler({"image": b64(images["jpeg"])}, None)
    assert "_aws" not in capsys.readouterr().out
    log = [line for line in _json_lines(log_stream.getvalue()) if line.get("message") == "request done"]
    assert len(log) == 1 and log[0]["predicted"] and "function_request_id" not in log[0]


# ---------------------------------------------------------------- unexpected failures


def test_unexpected_error_is_a_500_without_details_over_http(handler, event, images, monkeypatch, log_stream):
    from yogapose import imaging

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /var/task/yogapose/imaging.py line 1")

    monkeypatch.setattr(imaging, "open_image", broken)
    ev = event("function_url_post_image")
    ev["body"] = b64(images["jpeg"])
    resp = handler(ev, None)
    assert resp["statusCode"] == 500
    body = json.loads(resp["body"])
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in resp["body"] and "Traceback" not in resp["body"]
    assert "secret internals" in log_stream.getvalue(), "the details go to the log"


def test_unexpected_error_in_a_direct_invoke_is_a_chained_pose_error(handler, images, monkeypatch):
    from yogapose import imaging
    from yogapose.errors import PoseError

    monkeypatch.setattr(imaging, "open_image", lambda *a, **k: 1 / 0)
    with pytest.raises(PoseError, match="internal error") as info:
        handler({"image": b64(images["jpeg"])}, None)
    assert type(info.value) is PoseError
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    # In a batch, only the broken item fails.
    results = handler({"images": [b64(images["jpeg"])]}, None)
    assert results == [{"error": {"code": "internal_error", "message": "internal error; see the function's logs"}}]


# ---------------------------------------------------------------- CLI


def _cli(*args, env_extra=None):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "yogapose", *args], check=False, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_predict_prints_the_direct_invoke_json(handler, tiny_model_path, images, image_url, tmp_path):
    photo = tmp_path / "pose.jpg"
    photo.write_bytes(images["jpeg"])
    out = _cli("predict", str(photo), "--model", str(tiny_model_path))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == handler({"image": b64(images["jpeg"])}, None)
    # Several inputs (a file and a URL) -> one JSON Lines record per input, in order, each
    # with its source and the same probabilities (localtools/bulk.py; tests/contract/test_bulk_cli.py).
    out = _cli("predict", str(photo), image_url("pose.png"), "--model", str(tiny_model_path),
               env_extra={"ALLOW_PRIVATE_URLS": "true"})
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["source"] for r in records] == [str(photo), image_url("pose.png")]
    assert records[0]["probabilities"] == handler({"image": b64(images["jpeg"])}, None)
    assert records[1]["probabilities"] == handler({"url": image_url("pose.png")}, None)


def test_cli_errors_are_one_line_with_exit_codes(tiny_model_path, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    out = _cli("predict", str(bad), "--model", str(tiny_model_path))
    assert out.returncode == 1
    assert out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unsupported_media_type" in lines[0]
    assert "Traceback" not in out.stderr
    out = _cli("predict", str(tmp_path / "missing.jpg"), "--model", str(tiny_model_path))
    assert out.returncode == 1 and "cannot read" in out.stderr and "Traceback" not in out.stderr
    out = _cli("predict", str(bad), "--model", str(tmp_path / "no-model.tflite"))
    assert out.returncode == 1 and "model file not found" in out.stderr and "Traceback" not in out.stderr
    out = _cli("predict")
    assert out.returncode == 2 and "usage" in out.stderr.lower()
    out = _cli("frobnicate")
    assert out.returncode == 2
