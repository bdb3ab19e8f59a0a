"""The one image-format table (``yogapose.formats``) and the typed fetch errors."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from yogapose import edge, fetch, formats
from yogapose.deadline import Deadline, DeadlineExceeded
from yogapose.errors import BadRequest, UpstreamError, UpstreamTimeout

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=[f.pillow for f in formats.FORMATS])
def test_each_format_is_sniffed_from_what_pillow_writes(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, fmt.pillow)
    assert formats.sniff(buf.getvalue()) is fmt
    with Image.open(io.BytesIO(buf.getvalue()), formats=(fmt.pillow,)) as img:
        assert img.format == fmt.pillow
    assert fmt.media_type in formats.MEDIA_TYPES and fmt.media_type in fetch.ACCEPT


@pytest.mark.parametrize("data", [b"", b"RIFF\0\0\0\0WAVEfmt ", b"II*\0", b"<svg", b"%PDF-1.4", b"\xff\xd8"])
def test_other_bytes_are_not_sniffed_as_an_image(data):
    assert formats.sniff(data) is None


def test_the_edge_accepts_exactly_the_tables_media_types():
    assert edge.IMAGE_MEDIA_TYPES == formats.MEDIA_TYPES | {"application/octet-stream"}


def test_no_other_module_keeps_its_own_format_list():
    pattern = re.compile(r'"image/(jpeg|png|webp|gif|bmp)"|"(JPEG|WEBP)"|"\.webp"')
    for path in [*(ROOT / "yogapose").glob("*.py"), *(ROOT / "localtools").glob("*.py")]:
        if path.name != "formats.py":
            assert not pattern.search(path.read_text(encoding="utf-8")), path
    # Training and the bench write JPEGs of their own, but list no file name extensions
    # (convert/ once had its own list, without .jpe/.jfif).
    for path in [*(ROOT / "convert").glob("*.py"), *(ROOT / "bench").glob("*.py")]:
        assert '".webp"' not in path.read_text(encoding="utf-8"), path


# ------------------------------------------------------------------ typed fetch errors


def test_timeouts_are_told_apart_by_type_not_by_message():
    clock = fetch._Clock(time.monotonic() + 60, request_bound=False)
    assert type(fetch._translate(TimeoutError("deadline"), "h", clock)) is UpstreamTimeout
    worded = fetch._translate(OSError("the deadline was fine"), "h", clock)
    assert type(worded) is UpstreamError  # the word "deadline" no longer makes it a timeout
    assert "fetch deadline" in fetch._translate(fetch._DeadlinePassed(), "h", clock).message
    request = fetch._Clock(time.monotonic() + 60, request_bound=True)
    assert isinstance(fetch._translate(fetch._DeadlinePassed(), "h", request), DeadlineExceeded)


def test_s3_transport_errors_are_classified_by_botocore_type():
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ParamValidationError, ReadTimeoutError

    assert type(fetch._s3_transport_error(ReadTimeoutError(endpoint_url="x"), "s3://b/k")) is UpstreamTimeout
    assert type(fetch._s3_transport_error(ConnectTimeoutError(endpoint_url="x"), "s3://b/k")) is UpstreamTimeout
    assert type(fetch._s3_transport_error(ParamValidationError(report="bad"), "s3://b/k")) is BadRequest
    assert type(fetch._s3_transport_error(EndpointConnectionError(endpoint_url="x"), "s3://b/k")) is UpstreamError


def test_fetch_limits_come_from_settings_with_the_request_deadline():
    from yogapose.config import Settings

    deadline = Deadline.after(5)
    limits = fetch.FetchLimits.from_settings(Settings(max_bytes=123, allow_private=True), deadline)
    assert limits.max_bytes == 123 and limits.allow_private and limits.deadline is deadline
    assert fetch.FetchLimits() == fetch.FetchLimits.from_settings(Settings())
    with pytest.raises(DeadlineExceeded):
        fetch.fetch("https://example.com/a.jpg", fetch.FetchLimits(deadline=Deadline.after(-1)))
