"""The opt-in detailed answer (open-set verdict) on every entry point, and the six-key answer
left as it was.

The models are the committed tiny model with its metadata edited (a copy in tmp): its six
softmax outputs are declared logits and an ``open_set`` section is added whose threshold
either accepts everything (0.0) or nothing (1.01), so each verdict is reached on purpose.
With the real person detector (``model/pose_detection.tflite``, extracted by ``.ci/setup``)
a photo of a person is rejected as ``out_of_scope`` and a blank image as ``no_person``.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED, b64, image_bytes, running_local_server
from yogapose.metadata import PersonCrop, load_metadata

DETECTOR = REPO_ROOT / "model" / "pose_detection.tflite"
PERSON_PHOTO = SHARED / "data" / "yoga" / "val" / "tree" / "059ffef4c3ae6e7d.jpg"
DETAIL_KEYS = ["pose", "confidence", "reason", "probabilities", "person"]


def openset_copy(src: Path, dst_dir: Path, threshold: float, crop: bool) -> Path:
    dst = dst_dir / src.name  # the name its metadata gives
    shutil.copyfile(src, dst)
    data = json.loads(src.with_suffix(".json").read_text())
    data["output"]["activation"] = "linear"
    data["open_set"] = {"method": "test", "score": "max_softmax", "temperature": 1.0, "threshold": threshold}
    if crop:
        shutil.copyfile(DETECTOR, dst_dir / DETECTOR.name)
        data["preprocessing"]["person_crop"] = PersonCrop().to_dict()
    dst.with_suffix(".json").write_text(json.dumps(data))
    return dst


@pytest.fixture
def model_with(tiny_model_path, tmp_path, monkeypatch):
    """``model_with(threshold, crop)`` -> point the handler at such a model; returns its path."""

    def make(threshold: float, crop: bool = False) -> Path:
        if crop and not DETECTOR.is_file():
            pytest.skip("model/pose_detection.tflite missing: run `bash .ci/setup`")
        folder = tmp_path / f"m-{threshold}-{crop}"
        folder.mkdir()
        path = openset_copy(tiny_model_path, folder, threshold, crop)
        monkeypatch.setenv("MODEL_PATH", str(path))
        monkeypatch.setenv("ALLOW_PRIVATE_URLS", "true")
        return path

    return make


@pytest.fixture
def handler_():
    import lambda_function

    return lambda_function.lambda_handler


def assert_detailed(result, labels, accepted: bool | None = None):
    assert isinstance(result, dict)
    assert list(result) == DETAIL_KEYS
    assert list(result["probabilities"]) == list(labels)
    assert 0.0 <= result["confidence"] <= 1.0
    assert sum(result["probabilities"].values()) <= 1.0 + 1e-9
    if accepted is True:
        assert result["pose"] in labels and result["reason"] is None
        assert result["confidence"] == result["probabilities"][result["pose"]]
    if accepted is False:
        assert result["pose"] is None and result["reason"] in ("out_of_scope", "no_person")


def http_event(event, payload=None, body: bytes | None = None, query: dict | None = None,
               content_type: str = "application/json") -> dict:
    ev = event("function_url_post_json")
    if body is not None:
        import base64

        ev["body"] = base64.b64encode(body).decode()
        ev["isBase64Encoded"] = True
        ev["headers"]["content-type"] = content_type
    else:
        ev["body"] = json.dumps(payload)
    if query is not None:
        ev["queryStringParameters"] = query
        ev["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return ev


# ------------------------------------------------------------------ six keys stay the default


def test_six_key_answer_unchanged_without_details(model_with, handler_):
    path = model_with(0.0)
    labels = load_metadata(path).labels
    result = handler_({"image": b64(image_bytes())}, None)
    assert list(result) == list(labels)
    assert sum(result.values()) == pytest.approx(1.0)
    batch = handler_({"images": [b64(image_bytes())] * 2}, None)
    assert all(list(r) == list(labels) for r in batch)


# ------------------------------------------------------------------ direct / JSON events


def test_direct_image_details_accepted(model_with, handler_):
    labels = load_metadata(model_with(0.0)).labels
    plain = handler_({"image": b64(image_bytes())}, None)
    result = handler_({"image": b64(image_bytes()), "details": True}, None)
    assert_detailed(result, labels, accepted=True)
    assert result["pose"] == max(plain, key=plain.get), "the verdict's pose is the six-key answer's top"
    assert result["person"] is None  # no detector in this model: the whole image


def test_direct_url_details_rejected(model_with, handler_, httpserver):
    labels = load_metadata(model_with(1.01)).labels
    httpserver.expect_request("/p.jpg").respond_with_data(image_bytes(), content_type="image/jpeg")
    result = handler_({"url": httpserver.url_for("/p.jpg"), "details": True}, None)
    assert_detailed(result, labels, accepted=False)
    assert result["reason"] == "out_of_scope"  # no detector: nobody can say "no person"


def test_batches_give_every_item_the_detailed_answer(model_with, handler_, httpserver):
    labels = load_metadata(model_with(0.0)).labels
    httpserver.expect_request("/p.jpg").respond_with_data(image_bytes(), content_type="image/jpeg")
    httpserver.expect_request("/gone.jpg").respond_with_data("no", status=404)
    results = handler_({"urls": [httpserver.url_for("/p.jpg"), httpserver.url_for("/gone.jpg")],
                        "details": True}, None)
    assert_detailed(results[0], labels, accepted=True)
    assert results[1]["error"]["code"] == "upstream_error"
    results = handler_({"images": [b64(image_bytes())] * 3, "details": True}, None)
    assert len(results) == 3 and all(list(r) == DETAIL_KEYS for r in results)


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_details_must_be_a_boolean(model_with, handler_, value):
    from yogapose.errors import BadRequest

    model_with(0.0)
    with pytest.raises(BadRequest, match="'details' must be true or false"):
        handler_({"image": b64(image_bytes()), "details": value}, None)


def test_details_false_is_the_six_key_answer(model_with, handler_):
    labels = load_metadata(model_with(0.0)).labels
    assert list(handler_({"image": b64(image_bytes()), "details": False}, None)) == list(labels)


# ------------------------------------------------------------------ person detector verdicts


@pytest.mark.skipif(not PERSON_PHOTO.is_file(), reason="needs ../shared/data/yoga/val")
def test_person_found_and_rejected_as_out_of_scope(model_with, handler_):
    labels = load_metadata(model_with(1.01, crop=True)).labels
    result = handler_({"image": b64(PERSON_PHOTO.read_bytes()), "details": True}, None)
    assert_detailed(result, labels, accepted=False)
    assert result["reason"] == "out_of_scope"
    box = result["person"]
    assert box is not None and 0 <= box["x"] < 1 and 0 < box["width"] <= 1 and box["score"] >= 0.5


def test_no_person_reason_for_an_empty_scene(model_with, handler_):
    labels = load_metadata(model_with(1.01, crop=True)).labels
    result = handler_({"image": b64(image_bytes(size=(640, 480))), "details": True}, None)
    assert_detailed(result, labels, accepted=False)
    assert result["reason"] == "no_person" and result["person"] is None


@pytest.mark.skipif(not PERSON_PHOTO.is_file(), reason="needs ../shared/data/yoga/val")
def test_accepted_with_a_person_box(model_with, handler_):
    labels = load_metadata(model_with(0.0, crop=True)).labels
    result = handler_({"image": b64(PERSON_PHOTO.read_bytes()), "details": True}, None)
    assert_detailed(result, labels, accepted=True)
    assert result["person"] is not None


@pytest.mark.skipif(not PERSON_PHOTO.is_file(), reason="needs ../shared/data/yoga/val")
def test_several_people_the_answer_is_for_the_crop_most_in_scope(model_with, handler_):
    """A wide shot with two people: every candidate is classified and the answer (and its box)
    is the candidate's whose open-set score is highest, computed here from each crop alone."""
    import io

    import numpy as np
    from PIL import Image

    from yogapose.answer import open_set_score
    from yogapose.app import get_app

    path = model_with(0.0, crop=True)
    canvas = Image.new("RGB", (600, 450), (200, 200, 190))
    for cls, height, (x, y) in (("warrior", 280, (20, 150)), ("tree", 150, (420, 30))):
        with Image.open(sorted((SHARED / "data" / "yoga" / "val" / cls).glob("*.jpg"))[0]) as im:
            photo = im.convert("RGB")
        canvas.paste(photo.resize((round(photo.width * height / photo.height), height)), (x, y))
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    app = get_app()
    meta = load_metadata(path)
    frames = app.preprocessor.frames(app.preprocessor.decode(buf.getvalue(), 10**8))
    assert len(frames) >= 2, "the test needs several candidates"
    crop = meta.preprocessing.person_crop
    assert crop is not None and len(frames) <= app.preprocessor.candidate_limit == crop.candidates
    scores = []
    for f in frames:
        x = app.preprocessor.to_input(f)
        raw = app.model.predict_with(lambda b, x=x: b.__setitem__(slice(None), x.reshape(b.shape)))
        scores.append(open_set_score(raw, len(meta.labels), "max_softmax", 1.0))
    best = frames[int(np.argmax(scores))]
    result = handler_({"image": b64(buf.getvalue()), "details": True}, None)
    assert_detailed(result, meta.labels, accepted=True)
    assert result["person"] == best.person_dict()
    assert result["confidence"] == pytest.approx(max(scores), abs=1e-6)


# ------------------------------------------------------------------ Function URL


def test_function_url_json_body_details(model_with, handler_, event):
    labels = load_metadata(model_with(0.0)).labels
    resp = handler_(http_event(event, {"image": b64(image_bytes()), "details": True}), None)
    assert resp["statusCode"] == 200
    assert_detailed(json.loads(resp["body"]), labels, accepted=True)


@pytest.mark.parametrize("flag", ["1", "true"])
def test_function_url_raw_body_details_query(model_with, handler_, event, flag):
    labels = load_metadata(model_with(1.01)).labels
    resp = handler_(http_event(event, body=image_bytes(), content_type="image/jpeg", query={"details": flag}), None)
    assert resp["statusCode"] == 200
    assert_detailed(json.loads(resp["body"]), labels, accepted=False)


def test_function_url_details_query_off_and_bad(model_with, handler_, event):
    labels = load_metadata(model_with(0.0)).labels
    resp = handler_(http_event(event, body=image_bytes(), content_type="image/jpeg", query={"details": "0"}), None)
    assert list(json.loads(resp["body"])) == list(labels)
    resp = handler_(http_event(event, body=image_bytes(), content_type="image/jpeg", query={"details": "maybe"}), None)
    assert resp["statusCode"] == 400
    assert json.loads(resp["body"])["error"]["code"] == "bad_request"


def test_health_names_the_open_set_method_and_threshold(model_with, handler_, event):
    model_with(0.42)
    body = json.loads(handler_(event("function_url_get_health"), None)["body"])
    assert body["open_set"] == {"method": "test", "score": "max_softmax", "temperature": 1.0, "threshold": 0.42,
                                "no_person_min_confidence": 0.0}  # absent from this metadata: no such rule


def test_verdicts_are_counted_in_the_log_line(model_with, handler_, log_stream):
    model_with(1.01)
    handler_({"images": [b64(image_bytes())] * 2, "details": True}, None)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if '"request done"' in line]
    assert lines and lines[-1]["verdicts"] == {"out_of_scope": 2}
    assert lines[-1]["predicted"] == {}  # a rejected photo's top label is not a prediction
    model_with(0.0)
    handler_({"images": [b64(image_bytes())], "details": True}, None)
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines() if '"request done"' in line]
    assert lines[-1]["verdicts"] == {"accepted": 1} and sum(lines[-1]["predicted"].values()) == 1


# ------------------------------------------------------------------ local Function URL server


def test_local_server_details_query(model_with, handler_):
    labels = load_metadata(model_with(0.0)).labels
    with running_local_server(handler_) as srv:
        url = f"http://127.0.0.1:{srv.server_address[1]}/predict?details=1"
        req = urllib.request.Request(url, data=image_bytes(), headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert_detailed(json.loads(resp.read()), labels, accepted=True)


def test_app_loads_the_person_detector_beside_the_model(model_with):
    """get_app loads the detector on a second thread while LiteRT loads the classifier: the
    app gets that detector; a missing detector is still a clear error, and when the model is
    broken too, the model's own error is the one raised."""
    from yogapose.app import _app, _loaded, get_app

    path = model_with(0.0, crop=True)
    app = get_app()
    assert app.preprocessor.detector is not None
    assert app.preprocessor.prep == app.metadata.preprocessing
    (path.parent / DETECTOR.name).unlink()
    _app.cache_clear()
    _loaded.cache_clear()
    with pytest.raises(RuntimeError, match="person detector not found"):
        get_app()
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(RuntimeError, match="sha256 .* does not match its metadata"):
        get_app()
