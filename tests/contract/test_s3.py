"""s3:// fetching through boto3 against a real moto server on loopback.

The endpoint reaches boto3 only through ``AWS_ENDPOINT_URL_S3`` (read natively by
boto3 >= 1.28), exactly as a local run or the SAM/LocalStack setup would provide it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.s3server import aws_env, client, moto_s3
from yogapose import fetch as fetch_mod
from yogapose import s3client
from yogapose.config import Settings
from yogapose.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    PoseError,
    TargetNotAllowed,
    UpstreamError,
    UpstreamTimeout,
)
from yogapose.fetch import fetch, parse_s3_uri

pytestmark = pytest.mark.timeout(60)

BUCKET = "yoga-poses-test"
IMAGE = b"\xff\xd8\xff\xe0" + b"fake-jpeg-body" * 100


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        with pytest.MonkeyPatch.context() as mp:
            aws_env(mp, endpoint)
            s3 = client()
            s3.create_bucket(Bucket=BUCKET)
            s3.put_object(Bucket=BUCKET, Key="poses/tree.jpg", Body=IMAGE, ContentType="image/jpeg")
            s3.put_object(Bucket=BUCKET, Key="odd key?v=1#frag.jpg", Body=b"odd", ContentType="image/png")
            s3.put_object(Bucket=BUCKET, Key="big.jpg", Body=b"b" * 5000)
            s3.put_object(Bucket=BUCKET, Key="empty.jpg", Body=b"")
            s3.put_object(Bucket=BUCKET, Key="archived.jpg", Body=IMAGE, StorageClass="GLACIER")
        yield endpoint


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    aws_env(monkeypatch, moto_endpoint)
    s3client.reset()
    yield moto_endpoint
    s3client.reset()


def test_fetches_an_object(s3_env: str) -> None:
    got = fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings())
    assert got.data == IMAGE
    assert got.content_type == "image/jpeg"
    assert got.source_kind == "s3"
    assert got.final_url == f"s3://{BUCKET}/poses/tree.jpg"
    assert got.bytes_read == len(IMAGE)
    assert got.redirects == 0


def test_endpoint_comes_from_the_environment_and_client_is_cached(s3_env: str) -> None:
    fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings())
    clients = list(s3client._clients.values())
    assert len(clients) == 1
    assert clients[0].meta.endpoint_url == s3_env  # no endpoint_url argument was passed
    fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings())
    assert list(s3client._clients.values()) == clients


def test_keys_are_taken_verbatim(s3_env: str) -> None:
    assert fetch(f"s3://{BUCKET}/odd key?v=1#frag.jpg", Settings()).data == b"odd"


def test_a_missing_key_with_query_like_characters_is_named_as_looked_up(s3_env: str) -> None:
    with pytest.raises(NotFound, match=r"s3://yoga-poses-test/poses/tree\.jpg\?versionId=abc does not"):
        fetch(f"s3://{BUCKET}/poses/tree.jpg?versionId=abc", Settings())


def test_an_archived_object_is_403_saying_to_restore_it_not_a_retryable_502(s3_env: str) -> None:
    with pytest.raises(TargetNotAllowed, match="archived .* restore it"):
        fetch(f"s3://{BUCKET}/archived.jpg", Settings())


def test_an_empty_object_is_415_saying_it_is_empty(s3_env: str) -> None:
    from yogapose.errors import UnsupportedImage

    with pytest.raises(UnsupportedImage, match="is empty"):
        fetch(f"s3://{BUCKET}/empty.jpg", Settings())


def test_no_credentials_is_403_saying_how_to_configure_them(s3_env: str, monkeypatch, tmp_path) -> None:
    """Locally (serve, the CLI, ipython) nothing may be configured: a deployment matter, not a 500."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3client.reset()
    with pytest.raises(TargetNotAllowed, match="no AWS credentials are configured") as info:
        fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings())
    assert info.value.http_status == 403


def test_missing_key_is_404(s3_env: str) -> None:
    with pytest.raises(NotFound) as info:
        fetch(f"s3://{BUCKET}/poses/nope.jpg", Settings())
    assert info.value.http_status == 404
    assert "does not exist" in info.value.message


def test_missing_bucket_is_404(s3_env: str) -> None:
    with pytest.raises(NotFound, match="bucket"):
        fetch("s3://no-such-bucket-here/pose.jpg", Settings())


def test_object_over_the_cap_is_413(s3_env: str) -> None:
    with pytest.raises(PayloadTooLarge, match="5000"):
        fetch(f"s3://{BUCKET}/big.jpg", Settings(max_bytes=4096))
    assert fetch(f"s3://{BUCKET}/big.jpg", Settings(max_bytes=5000)).bytes_read == 5000


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3://bucket", "s3://bucket/", "s3:///key.jpg", "s3://ab/key.jpg", "s3://bad_bucket!/k.jpg",
     "s3://-bucket/k.jpg", "s3://a..b/k.jpg", "s3://bucket/" + "k" * 1025],
)
def test_malformed_s3_uris_are_400(uri: str) -> None:
    with pytest.raises(BadRequest):
        fetch(uri, Settings())


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("S3://My.Bucket-1/a/b c.jpg") == ("My.Bucket-1", "a/b c.jpg")


def test_unreachable_endpoint_is_502(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(UpstreamError) as info:
            fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings(connect_timeout=0.5))
    assert info.value.http_status == 502


def test_silent_endpoint_times_out_504(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # accept, then say nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(UpstreamTimeout) as info:
            fetch(f"s3://{BUCKET}/poses/tree.jpg", Settings(connect_timeout=0.5, read_timeout=0.3))
        assert info.value.http_status == 504
    finally:
        stop.set()
        thread.join(2)
        listener.close()
        for conn in accepted:
            conn.close()


def _client_error(code: str, status: int):  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("AccessDenied", 403, TargetNotAllowed),
        ("NoSuchKey", 404, NotFound),
        ("NoSuchBucket", 404, NotFound),
        ("InvalidObjectState", 403, TargetNotAllowed),  # archived in Glacier: the object's state, not S3's
        ("SlowDown", 503, UpstreamError),
        ("InternalError", 500, UpstreamError),
    ],
)
def test_s3_error_codes_map_to_documented_errors(code: str, status: int, expected: type[PoseError]) -> None:
    # moto does not enforce IAM, so AccessDenied & co. are checked at the mapping level.
    err = fetch_mod._s3_error(_client_error(code, status), "s3://b/k")
    assert type(err) is expected
    assert "s3://b/k" in err.message


def test_s3_uris_are_refused_when_the_limits_say_so(s3_env: str) -> None:
    """A public demo's URL: FetchLimits.from_settings(..., over_http=True) with
    S3_URLS_OVER_HTTP false; the refusal lives in fetch, beside the scheme check."""
    public = Settings(s3_urls_over_http=False)
    with pytest.raises(TargetNotAllowed, match="not accepted over this public URL"):
        fetch(f" S3://{BUCKET}/poses/tree.jpg", fetch_mod.FetchLimits.from_settings(public, over_http=True))
    assert fetch(f"s3://{BUCKET}/poses/tree.jpg", fetch_mod.FetchLimits.from_settings(public)).data == IMAGE
    assert fetch_mod.FetchLimits.from_settings(Settings(), over_http=True).allow_s3
