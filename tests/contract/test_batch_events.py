"""The handler on the bulk event shapes, against moto's S3 server (the real S3 protocol).

* Step Functions Distributed Map batches (ItemReader ``s3:listObjectsV2`` + ItemBatcher):
  folder markers skipped, missing keys and non-images as per-item errors (never a failed
  batch), the bucket from ``BatchInput``, one record per item in order, a spent deadline
  reported per item.
* S3 ObjectCreated notifications (classify on upload): URL-encoded keys decoded, the result
  written to ``RESULTS_PREFIX<key>.json``, keys under the results prefix never classified.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.s3server import aws_env, client, moto_s3, small_jpeg
from yogapose import batch, s3client

pytestmark = pytest.mark.timeout(120)

BUCKET = "yoga-bulk-test"
LABELS = {"chair", "cobra", "downdog", "goddess", "tree", "warrior"}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3() as url, pytest.MonkeyPatch.context() as mp:
        aws_env(mp, url)
        s3 = client()
        s3.create_bucket(Bucket=BUCKET)
        for i in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"photos/p{i}.jpg", Body=small_jpeg(i))
        s3.put_object(Bucket=BUCKET, Key="photos/", Body=b"")  # console "Create folder"
        s3.put_object(Bucket=BUCKET, Key="photos/notes.txt", Body=b"not an image")
        s3.put_object(Bucket=BUCKET, Key="photos/broken.jpg", Body=b"\xff\xd8\xff\xe0 truncated")
        s3.put_object(Bucket=BUCKET, Key="uploads/my photo (1).jpg", Body=small_jpeg(7))
        yield url


@pytest.fixture
def s3_handler(handler, endpoint: str, monkeypatch: pytest.MonkeyPatch):
    aws_env(monkeypatch, endpoint)
    s3client.reset()
    yield handler
    s3client.reset()


def item(key: str, size: int = 1000) -> dict[str, Any]:
    """One ItemReader item, shaped as Step Functions lists S3 objects."""
    return {"Etag": '"0123456789abcdef0123456789abcdef"', "Key": key, "LastModified": 1764979200,
            "Size": size, "StorageClass": "STANDARD"}


def test_map_batch_gives_one_record_per_item_in_order(s3_handler) -> None:
    event = {"Items": [item("photos/"), item("photos/p0.jpg"), item("photos/notes.txt"),
                       item("photos/missing.jpg"), item("photos/broken.jpg"), item("photos/p1.jpg")],
             "BatchInput": {"bucket": BUCKET}}
    event["Items"][0]["Size"] = 0
    out = s3_handler(event, None)
    assert [r["source"] for r in out] == [f"s3://{BUCKET}/photos/{k}" for k in
                                          ("p0.jpg", "notes.txt", "missing.jpg", "broken.jpg", "p1.jpg")]
    ok = [r for r in out if "error" not in r]
    assert len(ok) == 2
    for r in ok:
        assert set(r["probabilities"]) == LABELS
        assert r["pose"] == max(r["probabilities"], key=r["probabilities"].get)
        assert r["probability"] == r["probabilities"][r["pose"]]
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-9
    errors = {r["source"].rsplit("/", 1)[1]: r["error"]["code"] for r in out if "error" in r}
    assert set(errors) == {"notes.txt", "missing.jpg", "broken.jpg"}
    assert errors["notes.txt"] == "unsupported_media_type" and errors["missing.jpg"] == "not_found"
    assert errors["broken.jpg"] in ("unsupported_media_type", "unprocessable_image")


def test_map_batch_records_match_a_direct_invoke(s3_handler) -> None:
    out = s3_handler({"Items": [item("photos/p2.jpg")], "BatchInput": {"bucket": BUCKET}}, None)
    direct = s3_handler({"url": f"s3://{BUCKET}/photos/p2.jpg"}, None)
    assert out == [batch.record(f"s3://{BUCKET}/photos/p2.jpg", direct)]


def test_a_batch_of_only_folder_markers_and_non_images_still_answers(s3_handler) -> None:
    out = s3_handler({"Items": [item("photos/", 0), item("a/b/", 0), item("photos/notes.txt")],
                      "BatchInput": {"bucket": BUCKET}}, None)
    assert out == [{"source": f"s3://{BUCKET}/photos/notes.txt",
                    "error": {"code": "unsupported_media_type", "message": out[0]["error"]["message"]}}]
    assert s3_handler({"Items": [], "BatchInput": {"bucket": BUCKET}}, None) == []


@pytest.mark.parametrize("event", [
    {"Items": [item("photos/p0.jpg")], "BatchInput": {}},
    {"Items": [item("photos/p0.jpg")], "BatchInput": {"bucket": ""}},
    {"Items": [item("photos/p0.jpg")], "BatchInput": {"bucket": BUCKET, "details": "yes"}},
    {"Items": "photos/p0.jpg", "BatchInput": {"bucket": BUCKET}},
    {"Items": [item("photos/p0.jpg")]},
])
def test_a_malformed_batch_event_is_a_bad_request(s3_handler, event) -> None:
    from yogapose.errors import BadRequest

    with pytest.raises(BadRequest):
        s3_handler(event, None)


def test_a_batch_over_the_maps_largest_is_a_bad_request(s3_handler) -> None:
    """A direct invoke could send millions of Items (5 MB of zeros: 22 s past the deadline,
    1.7 GB, a 261 MB answer); the map never sends more than the template's maximum."""
    from yogapose.batch import MAX_MAP_ITEMS
    from yogapose.errors import BadRequest

    markers = [item(f"f{i}/", 0) for i in range(MAX_MAP_ITEMS)]  # skipped: no S3 reads
    assert s3_handler({"Items": markers, "BatchInput": {"bucket": BUCKET}}, None) == []
    with pytest.raises(BadRequest, match=f"at most {MAX_MAP_ITEMS}"):
        s3_handler({"Items": [0] * 2_500_000, "BatchInput": {"bucket": BUCKET}}, None)


def test_a_key_longer_than_any_s3_key_gets_a_short_error_record(s3_handler) -> None:
    """Each record repeated its Key whole: 50 keys of 125 KB (an event under 6 MB) came back
    over Lambda's 6 MB answer limit."""
    out = s3_handler({"Items": [item("k" * 125_580 + ".jpg")] * 50, "BatchInput": {"bucket": BUCKET}}, None)
    assert len(json.dumps(out)) < 50 * 600
    assert {r["error"]["code"] for r in out} == {"bad_request"}
    assert "longer than S3's 1024 bytes" in out[0]["error"]["message"]


def test_items_without_a_key_get_an_error_record(s3_handler) -> None:
    out = s3_handler({"Items": [{"Size": 3}, item("photos/p0.jpg")], "BatchInput": {"bucket": BUCKET}}, None)
    assert out[0]["error"]["code"] == "bad_request" and "error" not in out[1]


def test_a_spent_deadline_reports_the_items_not_started(make_app, endpoint, monkeypatch) -> None:
    aws_env(monkeypatch, endpoint)
    s3client.reset()

    class TwoItems:
        """Time runs out after two items were started."""

        def __init__(self) -> None:
            self.calls = 0

        def expired(self) -> bool:
            self.calls += 1
            return self.calls > 2

    from yogapose.observability import RequestStats

    event = {"Items": [item(f"photos/p{i}.jpg") for i in range(3)] + [item("photos/p0.jpg")],
             "BatchInput": {"bucket": BUCKET}}
    out = batch.map_batch(make_app(), event, RequestStats(), TwoItems())
    assert ["error" in r for r in out] == [False, False, True, True]
    assert {r["error"]["code"] for r in out[2:]} == {"upstream_timeout"}
    assert "ran out of time" in out[2]["error"]["message"]


# ------------------------------------------------------------------------ S3 notifications


def s3_event(key: str, bucket: str = BUCKET, name: str = "ObjectCreated:Put") -> dict:
    """An S3 notification as S3 sends it: the key URL-encoded (spaces as '+')."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-06T12:00:00.000Z", "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "classify",
               "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key, safe="/"), "size": 1234, "eTag": "abc",
                          "sequencer": "0A1B2C3D4E5F678901"}},
    }]}


def test_an_upload_is_classified_and_its_result_written_under_the_results_prefix(s3_handler) -> None:
    event = s3_event("uploads/my photo (1).jpg")
    assert "my+photo+%281%29.jpg" in event["Records"][0]["s3"]["object"]["key"]
    written = s3_handler(event, None)
    result_key = "results/uploads/my photo (1).jpg.json"
    assert written == [{"source": f"s3://{BUCKET}/uploads/my photo (1).jpg",
                        "result": f"s3://{BUCKET}/{result_key}"}]
    obj = client().get_object(Bucket=BUCKET, Key=result_key)
    assert obj["ContentType"] == "application/json"
    rec = json.loads(obj["Body"].read())
    direct = s3_handler({"url": f"s3://{BUCKET}/uploads/my photo (1).jpg"}, None)
    assert rec == batch.record(f"s3://{BUCKET}/uploads/my photo (1).jpg", direct)


def test_results_never_trigger_again_and_failures_are_written_too(s3_handler, monkeypatch) -> None:
    s3 = client()
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    # A result file landing in the bucket (or anything under the prefix) is not classified.
    assert s3_handler(s3_event("results/uploads/a.jpg.json"), None) == []
    assert s3_handler(s3_event("results/x.jpg"), None) == []
    assert s3_handler(s3_event("uploads/gone.jpg", name="ObjectRemoved:Delete"), None) == []
    after = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert after == before
    # A broken upload still gets a result: its error record.
    s3.put_object(Bucket=BUCKET, Key="uploads/notes.txt", Body=b"text")
    s3_handler(s3_event("uploads/notes.txt"), None)
    rec = json.loads(s3.get_object(Bucket=BUCKET, Key="results/uploads/notes.txt.json")["Body"].read())
    assert rec["error"]["code"] == "unsupported_media_type"
    # Another prefix from the environment (RESULTS_PREFIX) is honoured.
    monkeypatch.setenv("RESULTS_PREFIX", "out/")
    s3_handler(s3_event("uploads/my photo (1).jpg"), None)
    assert "error" not in json.loads(
        s3.get_object(Bucket=BUCKET, Key="out/uploads/my photo (1).jpg.json")["Body"].read())
    assert s3_handler(s3_event("out/uploads/my photo (1).jpg.json"), None) == []


def test_a_result_that_cannot_be_written_fails_the_invocation_for_a_retry(s3_handler) -> None:
    from yogapose.errors import PoseError

    # The upload's bucket exists only in the event: reading fails (a not_found record) and
    # writing the record fails too, which must surface so S3's async retry runs it again.
    with pytest.raises(PoseError, match="1 upload.s. left for S3's retry: could not write results/uploads/p.jpg"):
        s3_handler(s3_event("uploads/p.jpg", bucket="no-such-bucket-anywhere"), None)


def test_a_retryable_failure_is_not_written_as_the_result_but_left_for_s3s_retry(make_app, endpoint,
                                                                                 monkeypatch) -> None:
    """Out of time (or a throttled read) is not the upload's fault: writing that error as its
    result would end the story, since the invocation succeeds and S3 never retries."""
    from yogapose.errors import PoseError
    from yogapose.observability import RequestStats

    aws_env(monkeypatch, endpoint)
    s3client.reset()

    class Spent:
        def expired(self) -> bool:
            return True

    s3 = client()
    s3.put_object(Bucket=BUCKET, Key="uploads/late.jpg", Body=small_jpeg(5))
    s3.put_object(Bucket=BUCKET, Key="uploads/late.txt", Body=b"text")  # a permanent failure
    event = s3_event("uploads/late.jpg")
    event["Records"] += s3_event("uploads/late.txt")["Records"]
    with pytest.raises(PoseError, match="1 upload.s. left for S3's retry: s3://yoga-bulk-test/uploads/late.jpg"):
        batch.s3_notification(make_app(), event, RequestStats(), Spent())
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/uploads/late").get("Contents", [])}
    assert keys == {"results/uploads/late.txt.json"}  # the permanent one is written, the other is not


def test_an_upload_whose_result_key_would_be_too_long_is_skipped_not_retried(s3_handler) -> None:
    """results/<key>.json over S3's 1,024 bytes can never be written: no endless retries."""
    key = "uploads/" + "k" * (1015 - len("uploads/")) + ".jpg"
    client().put_object(Bucket=BUCKET, Key=key, Body=small_jpeg(2))
    assert s3_handler(s3_event(key), None) == []  # no exception: nothing for S3 to retry
    assert "Contents" not in client().list_objects_v2(Bucket=BUCKET, Prefix="results/uploads/kkk")


def test_writing_a_result_is_bounded_by_the_time_left(s3_handler) -> None:
    from yogapose.app import get_app
    from yogapose.deadline import DeadlineExceeded

    with pytest.raises(DeadlineExceeded, match="before writing"):
        batch._put_json(get_app(), BUCKET, "results/x.json", {}, left=0.0)


def test_a_notification_with_more_records_than_any_s3_event_is_a_bad_request(s3_handler) -> None:
    """S3 sends one record per event; a direct invoke could send tens of thousands, each an
    S3 read and write until the deadline."""
    from yogapose.errors import BadRequest

    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": "x.txt"}}}
    with pytest.raises(BadRequest, match="at most 50"):
        s3_handler({"Records": [record] * (batch.MAX_MAP_ITEMS + 1)}, None)


def test_a_malformed_notification_is_a_bad_request(s3_handler) -> None:
    from yogapose.errors import BadRequest

    with pytest.raises(BadRequest):
        s3_handler({"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {}}}]}, None)
    # A bucket or object given as a string, not an object: still a typed BadRequest.
    for s3_part in ({"bucket": "x", "object": {"key": "a.jpg"}}, {"bucket": {"name": "x"}, "object": "a.jpg"},
                    "not an object"):
        with pytest.raises(BadRequest):
            s3_handler({"Records": [{"eventSource": "aws:s3", "s3": s3_part}]}, None)


@pytest.mark.parametrize("bucket", ["my-photos/2026", "Not A Bucket!", "a"])
def test_a_batch_input_bucket_that_is_not_a_bucket_name_is_a_bad_request(s3_handler, bucket: str) -> None:
    from yogapose.errors import BadRequest

    with pytest.raises(BadRequest):
        s3_handler({"Items": [item("photos/p0.jpg")], "BatchInput": {"bucket": bucket}}, None)


def test_batch_input_details_gives_detailed_records(s3_handler) -> None:
    out = s3_handler({"Items": [item("photos/p0.jpg"), item("photos/notes.txt")],
                      "BatchInput": {"bucket": BUCKET, "details": True}}, None)
    detailed = s3_handler({"url": f"s3://{BUCKET}/photos/p0.jpg", "details": True}, None)
    assert out[0] == batch.record(f"s3://{BUCKET}/photos/p0.jpg", detailed)
    assert {"confidence", "reason", "person"} <= set(out[0]) and out[0]["pose"] == detailed["pose"]
    assert out[0]["probabilities"] == detailed["probabilities"]
    assert out[1]["error"]["code"] == "unsupported_media_type"


def test_a_public_demo_url_refuses_s3_uris_but_direct_invokes_keep_them(make_app, endpoint, event,
                                                                        monkeypatch) -> None:
    """With PublicDemo=true anyone may call the URL: an s3:// URI through it read the
    function's buckets for them (and told which keys exist)."""
    aws_env(monkeypatch, endpoint)
    s3client.reset()
    ev = event("function_url_post_json")
    ev["body"] = json.dumps({"urls": [f"s3://{BUCKET}/photos/p0.jpg", f" S3://{BUCKET}/photos/missing.jpg"]})
    public = make_app(s3_urls_over_http=False)
    resp = public.handle(ev)
    assert resp["statusCode"] == 200  # a batch: one error per item
    assert [r["error"]["code"] for r in json.loads(resp["body"])] == ["target_not_allowed"] * 2
    assert set(public.handle({"url": f"s3://{BUCKET}/photos/p0.jpg"})) == LABELS  # IAM-signed invoke
    private = make_app()
    assert set(json.loads(private.handle(ev)["body"])[0]) == LABELS
    s3client.reset()
