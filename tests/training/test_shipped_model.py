"""The shipped model on real validation photos, through ``lambda_handler``.

The photos are not hand-picked: the first ``PER_CLASS`` real photographs (not CGI renders)
of each class in ``../shared/data/yoga/val``, sorted by file name. The model must get at least
``MIN_ACCURACY`` of them right: well below its measured real-photo val accuracy (model card),
so sampling noise on 60 photos cannot fail it, while a broken handler path (wrong labels,
preprocessing or orientation) lands near chance (1/6) and does. Skips, with the reason, when the
model or ``../shared`` is absent.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, b64
from yogapose.metadata import load_metadata

SHIPPED = REPO_ROOT / "model" / "yoga-pose.tflite"
PER_CLASS = 10
MIN_ACCURACY = 0.75


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    if not SHIPPED.is_file() or not SHIPPED.with_suffix(".json").is_file():
        pytest.skip(f"{SHIPPED.relative_to(REPO_ROOT)} (+ .json) is not there yet: the shipped model is needed")
    return SHIPPED


def real_photos(yoga: Path) -> set[str]:
    """``val/<class>/<file>`` of real photographs per the manifest (all files if none)."""
    manifest = yoga / "manifest.csv"
    if not manifest.is_file():
        return set()
    with open(manifest, newline="", encoding="utf-8") as f:
        return {row["file"] for row in csv.DictReader(f) if row.get("synthetic", "0") == "0"}


@pytest.fixture(scope="module")
def sample(shared_dir, shipped_model) -> list[tuple[Path, str]]:
    yoga = shared_dir / "data" / "yoga"
    real = real_photos(yoga)
    picks = []
    for label in load_metadata(shipped_model).labels:
        files = sorted((yoga / "val" / label).glob("*.jpg"))
        if real:
            files = [p for p in files if f"val/{label}/{p.name}" in real]
        assert len(files) >= PER_CLASS, f"val/{label} has too few real photos"
        picks += [(p, label) for p in files[:PER_CLASS]]
    return picks


@pytest.fixture
def shipped_handler(shipped_model, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", str(shipped_model))
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    import lambda_function

    return lambda_function.lambda_handler


def test_val_photos_are_classified_correctly(shipped_handler, sample):
    wrong = []
    for path, label in sample:
        result = shipped_handler({"image": b64(path.read_bytes())}, None)
        assert sum(result.values()) == pytest.approx(1.0, abs=1e-9)
        top = max(result, key=result.get)
        if top != label:
            wrong.append(f"{path.parent.name}/{path.name} -> {top} ({result[top]:.2f})")
    accuracy = 1 - len(wrong) / len(sample)
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.2f} on {len(sample)} photos; wrong: {wrong}"


def test_function_url_upload_of_a_val_photo(shipped_handler, sample, event):
    path, _ = sample[0]
    ev = event("function_url_post_image")
    ev["body"] = b64(path.read_bytes())
    resp = shipped_handler(ev, None)
    assert resp["statusCode"] == 200
    assert resp["headers"]["X-Model-Version"] == load_metadata(SHIPPED).version
    direct = shipped_handler({"image": b64(path.read_bytes())}, None)
    assert json.loads(resp["body"]) == direct
