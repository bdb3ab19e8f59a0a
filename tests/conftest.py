"""Shared fixtures: the tiny model, a handler bound to it, image factories, event fixtures."""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from yogapose.config import Settings

from .tinymodel import INT8_NAME, make_tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = REPO_ROOT.parent / "shared"

if str(REPO_ROOT) not in sys.path:  # lambda_function.py lives at the repository root
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tiny float32 model (production signature), copied once per session.

    No TensorFlow needed: ``tests/tinymodel.py`` made the files under tests/fixtures/.
    """
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_int8_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tiny full-integer model: the float one's weights, int8 in and out."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-int8"), INT8_NAME)


@pytest.fixture
def handler(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, Any], Any]:
    """The real ``lambda_function.lambda_handler`` bound to the tiny model.

    Loopback URLs are allowed (the test image server runs on 127.0.0.1). The handler reads
    its settings per invocation, so re-importing is not needed and this stays reload-safe.
    """
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "true")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    import lambda_function

    return lambda_function.lambda_handler


@pytest.fixture
def make_app(tiny_model_path: Path):
    """``make_app(**settings_overrides)`` -> a ``yogapose.app.App`` on the tiny model."""
    from yogapose.app import get_app

    def build(**overrides: Any):
        return get_app(Settings(model_path=tiny_model_path, **overrides))

    return build


@pytest.fixture
def event() -> Callable[[str], dict]:
    """``event("function_url_post_json")`` -> a fresh copy of ``tests/fixtures/<name>.json``."""
    cache: dict[str, dict] = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        return copy.deepcopy(cache[name])

    return load


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (training/validation photos); skips the test when it is absent."""
    if not (SHARED / "data" / "yoga" / "val").is_dir():
        pytest.skip(f"{SHARED} is absent: the shared yoga photos are needed for this test")
    return SHARED


# ------------------------------------------------------------------------- images


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (320, 240), mode: str = "RGB",
                color: Any = None, **save: Any) -> bytes:
    """A small synthetic image: a coloured background with a contrasting block."""
    if color is None:
        color = {"RGB": (200, 120, 40), "RGBA": (200, 120, 40, 128), "L": 90, "CMYK": (10, 80, 160, 0),
                 "P": 3, "I;16": 40000, "LA": (90, 128)}.get(mode, 0)
    img = Image.new(mode, size, color)
    block = (size[0] // 4, size[1] // 4, size[0] // 2, size[1])
    if mode == "RGB":
        img.paste((30, 60, 200), block)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    """Named sample images: ordinary and awkward-but-valid ones."""
    out = {
        "jpeg": image_bytes("JPEG", quality=90),
        "jpeg_big": image_bytes("JPEG", size=(1600, 1200), quality=85),
        "jpeg_other": image_bytes("JPEG", color=(20, 200, 90)),
        "png": image_bytes("PNG"),
        "png_rgba": image_bytes("PNG", mode="RGBA"),
        "webp": image_bytes("WEBP"),
        "bmp": image_bytes("BMP"),
        "gif": image_bytes("GIF"),
        "cmyk_jpeg": image_bytes("JPEG", mode="CMYK"),
        "gray_png": image_bytes("PNG", mode="L"),
    }
    # 16-bit greyscale PNG with a gradient
    import numpy as np

    grad = (np.linspace(0, 65535, 200 * 160).reshape(160, 200)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grad).save(buf, "PNG")
    out["png16"] = buf.getvalue()
    # palette PNG with a transparent colour
    pal = Image.new("P", (120, 90), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.paste(1, (30, 20, 90, 70))
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    out["png_palette_alpha"] = buf.getvalue()
    # animated GIF, 3 frames
    frames = [Image.new("RGB", (100, 80), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["gif_animated"] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def loopback_httpserver():
    """A pytest-httpserver bound to the IP literal 127.0.0.1, one per test module.

    No resolver involved (no ::1-vs-127.0.0.1 ambiguity); modules share nothing.
    """
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


@contextlib.contextmanager
def running_local_server(handler: Callable[[Any, Any], Any]):
    """``localtools.localserver`` around ``handler`` on a free loopback port, in a thread."""
    from localtools import localserver

    srv = localserver.make_server("127.0.0.1", 0, handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture
def log_stream():
    """What the Powertools logger writes (its handler keeps the stdout of import time)."""
    import io

    from yogapose import observability

    handler = observability.logger.registered_handler
    buf = io.StringIO()
    old = handler.setStream(buf)
    try:
        yield buf
    finally:
        handler.setStream(old)
