"""End to end through the real AWS Lambda Runtime Interface Emulator and awslambdaric.

``python -m yogapose emulator --port N`` is started exactly as a user would start it (the RIE
binary comes from the aws-sam-cli wheel via pip, cached in ``.tools/``), then invoked over
HTTP on ``/2015-03-31/functions/function/invocations`` like ``docker run -p 8080:8080``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from localtools import emulator
from tests.conftest import REPO_ROOT, b64
from yogapose.metadata import load_metadata


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"emulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"emulator did not listen on {port} within {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def rie_binary() -> Path:
    # Downloads aws-sam-cli's wheel from the package index on first use (then cached).
    return emulator.ensure_rie()


@pytest.fixture(scope="module")
def emulator_url(rie_binary, tiny_model_path, tmp_path_factory):
    port = emulator.free_port()
    log = tmp_path_factory.mktemp("rie") / "emulator.log"
    env = dict(os.environ, MODEL_PATH=str(tiny_model_path), ALLOW_PRIVATE_URLS="true",
               PYTHONPATH=str(REPO_ROOT))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "yogapose", "emulator", "--port", str(port), "--log-level", "error"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}{emulator.INVOKE_PATH}", proc, log
    finally:
        # The emulator and its runtime run in their own session: stop exactly that group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture
def invoke(emulator_url):
    url, proc, log = emulator_url

    def call(event) -> dict:
        resp = requests.post(url, data=json.dumps(event), timeout=120)
        assert resp.status_code == 200, resp.text + "\n" + log.read_text()[-3000:]
        assert proc.poll() is None, "the emulator is still running"
        return resp.json()

    return call


@pytest.fixture
def image_url(httpserver, images):
    httpserver.expect_request("/pose.jpg").respond_with_data(images["jpeg"], content_type="image/jpeg")
    return httpserver.url_for("/pose.jpg")


def test_rie_binary_is_cached_and_executable(rie_binary):
    assert rie_binary.is_file() and os.access(rie_binary, os.X_OK)
    assert rie_binary.stat().st_size > 1_000_000
    assert emulator.ensure_rie() == rie_binary, "second call uses the cache"


def test_command_binds_loopback_only():
    cmd = emulator.command(8080, rie=Path("/x/rie"), runtime_api_port=9100)
    assert cmd[cmd.index("--runtime-interface-emulator-address") + 1] == "127.0.0.1:8080"
    assert cmd[cmd.index("--runtime-api-address") + 1] == "127.0.0.1:9100"
    assert cmd[-3:] == ["-m", "awslambdaric", "lambda_function.lambda_handler"]


def test_direct_url_invoke(invoke, image_url, tiny_model_path, images):
    labels = load_metadata(tiny_model_path).labels
    result = invoke({"url": image_url})
    assert list(result) == list(labels)
    assert all(isinstance(v, float) for v in result.values())
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-9)
    assert invoke({"image": b64(images["jpeg"])}) == result


def test_function_url_event(invoke, event, image_url, tiny_model_path):
    ev = event("function_url_post_json")
    ev["body"] = json.dumps({"url": image_url})
    resp = invoke(ev)
    assert resp["statusCode"] == 200
    assert resp["headers"]["X-Model-Version"] == load_metadata(tiny_model_path).version
    assert "infer;dur=" in resp["headers"]["Server-Timing"]
    assert len(json.loads(resp["body"])) == 6


def test_function_url_raw_image_event(invoke, event, images):
    ev = event("function_url_post_image")
    ev["body"] = b64(images["png_rgba"])
    resp = invoke(ev)
    assert resp["statusCode"] == 200
    assert sum(json.loads(resp["body"]).values()) == pytest.approx(1.0)


def test_handler_error_then_keeps_serving(invoke, event, image_url):
    err = invoke({"urls": 5})
    assert err["errorType"] == "BadRequest"
    assert "'urls'" in err["errorMessage"]
    err = invoke({"url": "file:///etc/passwd"})
    assert err["errorType"] == "TargetNotAllowed"
    # HTTP events get a JSON error response instead of a function error.
    ev = event("function_url_post_json")
    ev["body"] = "{not json"
    resp = invoke(ev)
    assert resp["statusCode"] == 400
    assert json.loads(resp["body"])["error"]["code"] == "bad_request"
    # The same execution environment still answers.
    assert len(invoke({"url": image_url})) == 6
