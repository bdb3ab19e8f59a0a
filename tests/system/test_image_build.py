"""The real Dockerfile, built and run without Docker: ``docker build`` + ``docker run`` + ``curl``.

buildah builds ``Dockerfile`` on a stand-in for the Lambda Python 3.12 base
(tests/imagebuild/standin.py says what it mirrors and why), then the built image's
ENTRYPOINT + CMD run in its root filesystem, and the runtime interface emulator inside is
invoked over HTTP with a direct ``{"url": ...}`` event and a Function URL event.

Needs root, buildah and debootstrap (``.ci/run`` installs them); skips with the reason
otherwise, unless REQUIRE_IMAGE_TEST=1 (set by CI), which turns that skip into a failure.
First run ~4-6 min (debootstrap + pip download in the build); the stand-in base is cached.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.imagebuild import harness, standin
from tests.imagebuild import image as img

pytestmark = pytest.mark.timeout(1200)

REPO = standin.REPO
SHARED_VAL = REPO.parent / "shared" / "data" / "yoga" / "val"
SHIPPED_MODEL = REPO / "model" / "yoga-pose.tflite"
TAG = "localhost/yogapose-imgtest:latest"


def _unavailable() -> str | None:
    if problem := harness.build_problem():
        return problem
    if sys.version_info[:2] != (3, 12):
        return f"the stand-in base copies this interpreter and needs Python 3.12, not {sys.version}"
    return None


@pytest.fixture(scope="module")
def buildah() -> standin.Buildah:
    if reason := _unavailable():
        harness.skip_or_fail(reason, "the image test")
    return standin.Buildah()


def _model_files(tmp: Path) -> list[Path] | None:
    """None when the shipped model exists (build the work tree as is), else a tiny stand-in."""
    if SHIPPED_MODEL.exists():
        return None
    from tests.tinymodel import make_tiny_model

    tiny = make_tiny_model(tmp / "tiny")
    meta = json.loads(tiny.with_suffix(".json").read_text())
    meta["model_file"] = SHIPPED_MODEL.name
    out = tmp / "model"
    out.mkdir()
    shutil.copy2(tiny, out / SHIPPED_MODEL.name)
    (out / SHIPPED_MODEL.with_suffix(".json").name).write_text(json.dumps(meta, indent=2))
    return [out / SHIPPED_MODEL.name, out / SHIPPED_MODEL.with_suffix(".json").name]


@pytest.fixture(scope="module")
def built(buildah, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagebuild")
    base = standin.ensure_standin(buildah)
    model_files = _model_files(tmp)
    # With the shipped model in the tree the build context is the work tree itself, exactly
    # what `docker build .` sends (.dockerignore applies); until then a copy with a tiny model.
    context = REPO if model_files is None else img.make_context(tmp / "context", model_files)
    img.remove_image(buildah, TAG)
    built = img.build_image(buildah, context, base, TAG, tmp / "build.log")
    labels = json.loads((context / "model" / "yoga-pose.json").read_text())["labels"]
    yield built, labels, context
    if os.environ.get("YOGAPOSE_KEEP_IMAGE") != "1":
        img.remove_image(buildah, TAG)


@pytest.fixture(scope="module")
def image_server(loopback_httpserver):
    """The loopback web server with a real validation photo (or a generated one) as /pose.jpg."""
    photos = sorted((SHARED_VAL / "tree").glob("*.jpg")) if SHARED_VAL.exists() else []
    if photos:
        data = photos[0].read_bytes()
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (320, 240), (200, 120, 40)).save(buf, "JPEG")
        data = buf.getvalue()
    loopback_httpserver.expect_request("/pose.jpg").respond_with_data(data, content_type="image/jpeg")
    return loopback_httpserver


@pytest.fixture(scope="module")
def function(buildah, built, tmp_path_factory):
    log = tmp_path_factory.mktemp("run") / "function.log"
    with img.RunningFunction(buildah, built[0].name, harness.FUNCTION_ENV, log) as running:
        yield running
        print(running.output())  # shown by pytest only when a test fails


def _find_probabilities(value, labels):
    """The {label: probability} dict in a response, wherever the contract nests it."""
    if isinstance(value, dict):
        if set(value) == set(labels) and all(isinstance(v, float | int) for v in value.values()):
            return value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_probabilities(item, labels)
            if found is not None:
                return found
    return None


def _assert_probabilities(payload, labels):
    probs = _find_probabilities(payload, labels)
    assert probs is not None, f"no {{label: probability}} for {labels} in {payload!r}"
    assert all(0.0 <= p <= 1.0 for p in probs.values()), probs
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-3), probs


def _invoke(function, event: dict):
    import requests

    resp = requests.post(function.url, json=event, timeout=120)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text}\n{function.output()}"
    return resp.json()


def test_image_layers_and_contents(buildah, built, capsys):
    image, _, context = built
    config = json.loads(buildah("inspect", "--type", "image", image.name))["OCIv1"]["config"]
    assert config["Cmd"] == ["lambda_function.lambda_handler"]
    assert config["Entrypoint"] == ["/lambda-entrypoint.sh"]  # inherited from the base
    # Base layers, then one layer of dependencies, the CPU-list shim, the model, the person
    # detector (extracted in the build), the package and the handler.
    assert len(image.layers) == image.base_layers + 6, image.layers
    deps = image.layers[image.base_layers]
    assert deps > 50 * 1024 * 1024, "the first layer on the base should be the dependencies"
    assert image.layers[image.base_layers + 1] < 1024 * 1024, "the shim layer holds one small library"
    # Preloaded into every process of the image (inert where the CPU files exist).
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LD_PRELOAD"] == "/usr/local/lib/libcpulist.so", env
    with img.Rootfs(buildah, image.name) as root:
        assert (root / "usr" / "local" / "lib" / "libcpulist.so").is_file()
        assert not (root / "tmp" / "zig").exists() and not (root / "tmp" / "cpulist").exists()
        task = root / "var" / "task"
        for rel in ("lambda_function.py", "yogapose/__init__.py", "yogapose/config.py",
                    "model/yoga-pose.tflite", "model/yoga-pose.json", "numpy", "PIL",
                    "ai_edge_litert", "aws_lambda_powertools", "boto3", "pybase64"):  # fmt: skip
            assert (task / rel).exists(), rel
        assert (task / "model" / "yoga-pose.tflite").read_bytes() == (
            context / "model" / "yoga-pose.tflite"
        ).read_bytes()
        for rel in ("tmp/build", "opt/deps", "root/.cache/pip"):
            assert not (root / rel).exists(), rel
        # Compiled at build time: /var/task is read-only on Lambda.
        assert list((task / "numpy").glob("__pycache__/*.pyc"))
    mib = image.added_bytes / 2**20
    sizes = ", ".join(f"{n / 2**20:.1f}" for n in image.layers[image.base_layers :])
    with capsys.disabled():
        print(f"\n[image] built in {image.seconds:.0f} s; adds {mib:.1f} MiB on top of the base "
              f"(layers deps/shim/model/detector/package/handler: {sizes} MiB, uncompressed)")  # fmt: skip


# What Lambda runs, besides the installed dependencies: everything else in /var/task is a
# leak of the build context (dev tools, tests, training, lock files, the venv, docs).
SERVING_TOP_LEVEL = {"lambda_function.py", "yogapose", "model"}
DEV_ONLY = ("localtools", "yogapose/__main__.py", "tests", "convert", "bench", "build", "data",
            ".venv", ".git", ".ci", "Dockerfile", ".dockerignore", "Pipfile", "Pipfile.lock",
            "template.yaml", "README.md", "model/README.md", "bin")  # fmt: skip


def _files(root: Path) -> set[str]:
    """Relative paths of the files under ``root``, bytecode caches left out."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip


def _distribution_top_levels(task: Path) -> set[str]:
    """Top-level names in ``task`` that an installed distribution's RECORD claims."""
    names = set()
    for record in task.glob("*.dist-info/RECORD"):
        with record.open(newline="") as f:
            names.update(row[0].split("/")[0] for row in csv.reader(f) if row)
    return names


def test_image_holds_only_what_lambda_runs(buildah, built):
    """The file list of /var/task: handler, serving package, model files, dependencies."""
    image, _, context = built
    with img.Rootfs(buildah, image.name) as root:
        task = root / "var" / "task"
        for rel in DEV_ONLY:
            assert not (task / rel).exists(), f"{rel} is in the image"
        assert not [p for p in task.rglob("localtools")], "a localtools/ is in the image"
        # Every top-level entry is the handler, the package, the model or a dependency's.
        top = {p.name for p in task.iterdir()}
        stray = top - SERVING_TOP_LEVEL - _distribution_top_levels(task)
        assert not stray, f"not serving code and not an installed dependency: {sorted(stray)}"
        # The serving package is exactly the tree's yogapose/ minus the dev launcher.
        expected = _files(context / "yogapose") - {"__main__.py"}
        assert _files(task / "yogapose") == expected
        # The model folder holds model files and their metadata only (no card, no plots).
        model = _files(task / "model")
        assert model and all(name.endswith((".tflite", ".json")) for name in model), model


def test_direct_url_event_over_emulator(function, built, image_server):
    labels = built[1]
    result = _invoke(function, {"url": image_server.url_for("/pose.jpg")})
    _assert_probabilities(result, labels)


def test_function_url_event_over_emulator(function, built, image_server):
    labels = built[1]
    body = json.dumps({"url": image_server.url_for("/pose.jpg")})
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": {
                "method": "POST",
                "path": "/predict",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "image-test",
            },
            "requestId": "image-test-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1795305600000,
        },
        "body": body,
        "isBase64Encoded": False,
    }
    response = _invoke(function, event)
    assert response["statusCode"] == 200, response
    headers = {k.lower(): v for k, v in response["headers"].items()}
    assert headers["content-type"].startswith("application/json"), headers
    _assert_probabilities(json.loads(response["body"]), labels)


def test_bad_url_is_a_clear_error_and_the_function_survives(function, built, image_server):
    event = {
        "version": "2.0",
        "rawPath": "/predict",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/predict"}},
        "body": json.dumps({"url": "ftp://127.0.0.1/pose.jpg"}),
        "isBase64Encoded": False,
    }
    response = _invoke(function, event)
    assert 400 <= response["statusCode"] < 500, response
    assert "error" in json.loads(response["body"]), response
    # Same process, next request still answers.
    _assert_probabilities(_invoke(function, {"url": image_server.url_for("/pose.jpg")}), built[1])
