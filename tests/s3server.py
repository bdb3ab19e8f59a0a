"""moto's S3 server on loopback for the S3 and bulk tests, reached the way boto3 finds a real one.

The endpoint reaches boto3 only through ``AWS_ENDPOINT_URL_S3``; credentials are dummies
and no config file is read.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A ThreadedMotoServer on 127.0.0.1 (free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def client() -> Any:
    """A plain boto3 S3 client for the test's own setup (the environment names the endpoint)."""
    import boto3

    return boto3.session.Session().client("s3")


def small_jpeg(i: int, size: int = 24) -> bytes:
    """A tiny distinct JPEG: the colour depends on ``i`` so the tiny model's answers vary."""
    img = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    img.paste(((i * 11) % 256, 255 - (i * 7) % 256, 90), (0, 0, size // 2, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()
