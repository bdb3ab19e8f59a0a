"""yogapose.person against MediaPipe's own pipeline, on real val photos.

The detector's post-processing (anchors, box decoding, weighted NMS, letterbox removal,
person region) is our numpy re-implementation of MediaPipe's graph; this checks it against
the original: the pinned ``mediapipe==0.10.14`` wheel, run in a side venv
(``tests/mediapipe/env.py``: ``.tools/mediapipe-venv``, git-ignored, built once per
machine, ~30-70 s; never in the project venv or the image) by ``tests/mediapipe/worker.py``
on the same decoded pixels. Three levels:

1. decoding, exactly: each photo is also given as a "same-tensor view" (resized by us so
   that both letterboxes are a pure integer shift), so both sides run the detector on the
   same input tensor; MediaPipe's ``PoseDetectionCpu`` output (their anchors, decoding,
   weighted NMS, letterbox removal) and its ``PoseDetectionToRoi`` square must then equal
   ``PersonDetector.detect`` and our region to float rounding (measured <= 6e-7);
2. the photos as decoded: same people and keypoints up to the letterbox resampling (they
   use OpenCV, we Pillow);
3. the full pose solution: we find a person wherever it finds a pose, and its visible
   landmarks (visibility > 0.5) fall inside our person box.

Skips when the side venv cannot be built (no Python 3.12, no PyPI) or the val photos are
absent, unless REQUIRE_MEDIAPIPE_TEST=1 (set by ``.ci/run`` under CI=true): then a failure.
Cached run: ~25 s for 60 photos.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.mediapipe.env import REPO, ensure_venv
from yogapose.metadata import PersonCrop, sha256_file
from yogapose.person import INPUT_SIZE, PersonDetector

# MediaPipe's pose_detection_to_roi.pbtxt scales the body circle by 1.25 (its landmark
# model's margin); our crop's scale is a metadata choice, compared only through this.
MEDIAPIPE_ROI_SCALE = 1.25

pytestmark = pytest.mark.timeout(1200)  # includes a first-time venv build

SHARED_VAL = REPO.parent / "shared" / "data" / "yoga" / "val"
WORKER = REPO / "tests" / "mediapipe" / "worker.py"
PER_CLASS = int(os.environ.get("MEDIAPIPE_TEST_PER_CLASS", "10"))  # 6 classes -> 60 photos
VISIBLE = 0.5  # a landmark MediaPipe itself calls visible


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_MEDIAPIPE_TEST") == "1":
        pytest.fail(f"REQUIRE_MEDIAPIPE_TEST=1 but the MediaPipe comparison cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def sample_photos(val: Path = SHARED_VAL, per_class: int = PER_CLASS) -> list[Path]:
    """``per_class`` photos per class, evenly spaced in name order: deterministic, no tuning."""
    photos: list[Path] = []
    for cls in sorted(p for p in val.iterdir() if p.is_dir()):
        files = sorted(p for p in cls.iterdir() if p.is_file())
        n = min(per_class, len(files))
        photos += [files[i * len(files) // n] for i in range(n)]
    return photos


def decode(path: Path) -> Image.Image:
    """Upright RGB, as the serving path decodes (EXIF orientation applied), full size."""
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def same_tensor_view(img: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """The photo resized (by us) to long side ``size`` with an even short-side margin.

    Both letterboxes then reduce to a pure integer shift (no resampling, the same zero
    border), so MediaPipe and we feed the detector the same input tensor and any difference
    left is in the decoding: anchors, boxes, NMS, letterbox removal.
    """
    w, h = img.size
    nw, nh = round(w * size / max(w, h)), round(h * size / max(w, h))
    nw -= (size - nw) % 2
    nh -= (size - nh) % 2
    return img.resize((nw, nh), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> dict[str, list[dict]]:
    """Per photo, our detections and person box next to MediaPipe's outputs, for the photos
    as decoded ("photos") and for their same-tensor views ("same_tensor")."""
    if not SHARED_VAL.is_dir():
        _unavailable(f"the val photos are not there: {SHARED_VAL}")
    py, status = ensure_venv()
    print(f"[mediapipe] {status}")
    if py is None:
        _unavailable(status)
    tmp = tmp_path_factory.mktemp("mediapipe")
    photos = sample_photos()
    views = {"photos": [decode(p) for p in photos]}
    views["same_tensor"] = [same_tensor_view(img) for img in views["photos"]]
    arrays = []
    for name, images in views.items():
        for i, img in enumerate(images):
            arrays.append(str(tmp / f"{name}-{i:03d}.npy"))
            np.save(arrays[-1], np.asarray(img))
    (tmp / "job.json").write_text(json.dumps({"images": arrays}))
    run = subprocess.run([str(py), str(WORKER), str(tmp / "job.json"), str(tmp / "out.json")],
                         capture_output=True, text=True, timeout=900, check=False, cwd=tmp)
    assert run.returncode == 0, f"the MediaPipe worker failed:\n{run.stderr[-3000:]}"
    ref = json.loads((tmp / "out.json").read_text())
    crop = PersonCrop()
    # The file MediaPipe's graphs load is the one our metadata pins: same weights, by hash.
    assert ref["detector_sha256"] == crop.detector_sha256, ref["detector_file"]
    detector = PersonDetector(ref["detector_file"], crop)
    results = iter(ref["results"])
    out: dict[str, list[dict]] = {}
    for name, images in views.items():
        out[name] = [
            {"photo": f"{path.parent.name}/{path.name}", "size": img.size, "ours": detector.detect(img),
             "box": detector.find_person(img), **next(results)}
            for path, img in zip(photos, images, strict=True)
        ]
    return out


def test_the_checked_detector_is_the_one_in_model_dir():
    """model/pose_detection.tflite (extracted at set-up) is byte-identical to the one compared."""
    shipped = REPO / "model" / PersonCrop().detector_file
    if not shipped.exists():
        pytest.skip(f"{shipped.relative_to(REPO)} not extracted here (bash .ci/setup does it)")
    assert sha256_file(shipped) == PersonCrop().detector_sha256


def _keypoint_error(ours, theirs: dict) -> float:
    """Largest keypoint coordinate difference between two detections, relative units."""
    return float(np.abs(np.asarray(ours.keypoints) - np.asarray(theirs["keypoints"])).max())


def _box_error(ours, theirs: dict) -> float:
    x, y, w, h = theirs["box"]
    return float(np.abs(np.asarray(ours.box) - (x, y, x + w, y + h)).max())


def _region_vs_roi(r: dict) -> tuple[float, float]:
    """(centre distance, side difference) between our square for MediaPipe's first detection
    (their most confident) and their ROI, both relative to their side; unclipped."""
    w, h = r["size"]
    roi = r["roi"]
    ours = min(r["ours"], key=lambda d: _keypoint_error(d, r["detections"][0]))
    kp = np.asarray(ours.keypoints) * (w, h)
    side = 2 * float(np.hypot(*(kp[1] - kp[0]))) * MEDIAPIPE_ROI_SCALE
    mp_side = roi["width"] * w
    assert roi["height"] * h == pytest.approx(mp_side, rel=1e-3)  # a square in pixels
    centre = float(np.hypot(kp[0][0] - roi["x_center"] * w, kp[0][1] - roi["y_center"] * h))
    return centre / mp_side, abs(side - mp_side) / mp_side


def test_decoding_is_mediapipes_on_the_same_input_tensor(compared):
    """Same input tensor -> the same detections, to float32 rounding: every person (count and
    order), score, box and keypoint, after NMS and letterbox removal; and the same region.

    Measured on all 703 val photos' views: differences <= 4e-7 (keypoints, boxes) and 2e-6
    (scores); 1e-4 leaves room for another CPU's float rounding and nothing else.
    """
    rows = compared["same_tensor"]
    assert sum(len(r["detections"]) for r in rows) >= 0.9 * len(rows), "MediaPipe found almost nobody?"
    worst = {"keypoint": 0.0, "box": 0.0, "score": 0.0, "roi centre": 0.0, "roi side": 0.0}
    for r in rows:
        assert len(r["ours"]) == len(r["detections"]), (r["photo"], r["ours"], r["detections"])
        for ours, theirs in zip(r["ours"], r["detections"], strict=True):
            worst["keypoint"] = max(worst["keypoint"], _keypoint_error(ours, theirs))
            worst["box"] = max(worst["box"], _box_error(ours, theirs))
            worst["score"] = max(worst["score"], abs(ours.score - theirs["score"]))
        if r["roi"] is not None:
            centre, side = _region_vs_roi(r)
            worst["roi centre"], worst["roi side"] = max(worst["roi centre"], centre), max(worst["roi side"], side)
    print(f"[mediapipe] same tensor, largest differences: {worst}")
    assert max(worst.values()) < 1e-4, worst


def test_detections_on_photos_match_within_resampling_noise(compared):
    """On the photos as decoded, the only difference left is the letterbox resampling
    (MediaPipe: OpenCV warpAffine; we: Pillow): same people, keypoints within ~1 % of the
    image.

    Measured on all 703 val photos: 5 count mismatches (0.7 %, scores within 0.05 of the
    0.5 threshold or two overlapping bodies); keypoint difference median 0.007, p95 0.030;
    score difference p95 0.042.
    """
    rows = compared["photos"]
    mismatched = [(r["photo"], [round(d.score, 2) for d in r["ours"]], [round(d["score"], 2) for d in r["detections"]])
                  for r in rows if len(r["ours"]) != len(r["detections"])]
    errors, score_diffs = [], []
    for r in rows:
        for theirs in r["detections"]:
            if r["ours"]:
                best = min(r["ours"], key=lambda d: _keypoint_error(d, theirs))
                errors.append(_keypoint_error(best, theirs))
                score_diffs.append(abs(best.score - theirs["score"]))
    e, s = np.asarray(errors), np.asarray(score_diffs)
    print(f"[mediapipe] photos: keypoint difference median {np.median(e):.4f} p95 {np.quantile(e, 0.95):.4f}; "
          f"score difference p95 {np.quantile(s, 0.95):.4f}; count mismatches {mismatched}")
    assert len(mismatched) <= 0.05 * len(rows), mismatched
    assert np.median(e) < 0.015 and np.quantile(e, 0.95) < 0.06
    assert np.quantile(s, 0.95) < 0.1


def test_person_found_wherever_mediapipe_finds_a_pose(compared):
    """Measured on all 703 val photos: MediaPipe's pose in 693, our person in 692 of them."""
    rows = compared["photos"]
    posed = [r for r in rows if r["landmarks"] is not None]
    missed = [r["photo"] for r in posed if r["box"] is None]
    print(f"[mediapipe] pose found by MediaPipe in {len(posed)}/{len(rows)}; we miss {missed}")
    assert len(posed) >= 0.9 * len(rows), "MediaPipe found almost no poses: a broken reference?"
    assert len(missed) <= 0.05 * len(posed), missed


def test_person_box_holds_mediapipes_visible_landmarks(compared):
    """The crop keeps the body: the pose solution's visible landmarks are in our person box.

    Landmarks are clipped to the image first: MediaPipe extrapolates limbs beyond the frame,
    and no crop can hold those. With MediaPipe's own ROI scale (1.25) 99.7 % were inside on
    all 703 val photos. Our crop is tighter by choice (scale 1.0: the classifier learns from
    tightly framed photos, and val accuracy rose with it), so a wide pose's hand or foot may
    fall outside: on the CI sample of 60 photos 97.8 % inside on average, all inside in 82 %
    of photos, >= 90 % inside in 90 %; the misses are wide cobras and downdogs (feet/head
    beyond the body circle) and a photo with two people, where MediaPipe follows the more
    confident one and we the larger.
    """
    fractions = {}
    for r in compared["photos"]:
        if r["landmarks"] is None or r["box"] is None:
            continue
        b = r["box"]
        pts = np.asarray([(x, y) for x, y, v in r["landmarks"] if v > VISIBLE]).reshape(-1, 2)
        if len(pts) == 0:
            continue
        pts = np.clip(pts, 0, r["size"])
        inside = (pts[:, 0] >= b.left) & (pts[:, 0] <= b.right) & (pts[:, 1] >= b.top) & (pts[:, 1] <= b.bottom)
        fractions[r["photo"]] = float(inside.mean())
    f = np.asarray(list(fractions.values()))
    worst = sorted(fractions.items(), key=lambda kv: kv[1])[:5]
    print(f"[mediapipe] visible landmarks inside our box: mean {f.mean():.4f}, all inside in {np.mean(f == 1.0):.3f} "
          f"of photos, >= 90 % inside in {np.mean(f >= 0.9):.3f}; worst {worst}")
    assert len(f) >= 0.8 * len(compared["photos"])
    assert f.mean() >= 0.97
    assert np.mean(f >= 0.9) >= 0.85, worst
