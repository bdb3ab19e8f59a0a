"""yogapose.person without MediaPipe: the anchor layout, letterboxing, decoding, weighted NMS,
the person region and windows, and the real detector on a real photo and a blank one.

(The agreement with MediaPipe's own pipeline is tests/system/test_person_mediapipe.py.)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from yogapose.metadata import PersonCrop
from yogapose.person import (
    INPUT_SIZE,
    NUM_ANCHORS,
    PersonBox,
    PersonDetector,
    decode,
    letterbox,
    person_region,
    ssd_anchors,
    tiles,
    unletterbox,
    weighted_nms,
)

REPO = Path(__file__).resolve().parents[2]
DETECTOR = REPO / "model" / PersonCrop().detector_file


# --- anchors --------------------------------------------------------------------------------

def test_anchor_layout_is_mediapipes():
    """28x28x2 (stride 8), 14x14x2 (stride 16), 7x7x6 (three stride-32 layers share a grid),
    row-major, each cell's anchors consecutive: the order of the detector's 2,254 outputs."""
    a = ssd_anchors()
    assert a.shape == (NUM_ANCHORS, 2) == (28 * 28 * 2 + 14 * 14 * 2 + 7 * 7 * 6, 2)
    np.testing.assert_allclose(a[0], (0.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(a[1], (0.5 / 28, 0.5 / 28))
    np.testing.assert_allclose(a[2], (1.5 / 28, 0.5 / 28))  # x runs first
    np.testing.assert_allclose(a[2 * 28], (0.5 / 28, 1.5 / 28))
    np.testing.assert_allclose(a[1567], (27.5 / 28, 27.5 / 28))
    np.testing.assert_allclose(a[1568], (0.5 / 14, 0.5 / 14))
    np.testing.assert_allclose(a[1960:1966], np.tile((0.5 / 7, 0.5 / 7), (6, 1)))
    np.testing.assert_allclose(a[1966], (1.5 / 7, 0.5 / 7))
    np.testing.assert_allclose(a[-1], (6.5 / 7, 6.5 / 7))
    assert a.dtype == np.float32


# --- letterbox ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(300, 150), (150, 300), (224, 224), (1000, 999), (7, 500)])
def test_letterbox_keeps_aspect_and_round_trips(size):
    w, h = size
    img = Image.new("RGB", size, (255, 255, 255))
    x, pad = letterbox(img)
    assert x.shape == (1, INPUT_SIZE, INPUT_SIZE, 3) and x.dtype == np.float32
    left, top, right, bottom = pad
    # the image is where the padding says, white (1.0); the border is black (-1.0)
    rows = np.flatnonzero(x[0, :, :, 0].max(axis=1) > 0)
    cols = np.flatnonzero(x[0, :, :, 0].max(axis=0) > 0)
    assert rows[0] == round(top * INPUT_SIZE) and rows[-1] + 1 == round((1 - bottom) * INPUT_SIZE)
    assert cols[0] == round(left * INPUT_SIZE) and cols[-1] + 1 == round((1 - right) * INPUT_SIZE)
    assert x.max() == 1.0 and x.min() == (-1.0 if left + right + top + bottom > 0 else 1.0)
    # the long side fills the input
    assert min(left + right, top + bottom) == 0.0
    inner_w, inner_h = (1 - left - right) * INPUT_SIZE, (1 - top - bottom) * INPUT_SIZE
    assert inner_w / inner_h == pytest.approx(w / h, rel=0.02 + 2 / min(inner_w, inner_h))
    # a point in the original -> letterboxed -> back
    pts = np.asarray([0.0, 0.0, 1.0, 1.0, 0.25, 0.75, 0.6, 0.1], np.float32)
    boxed = pts.copy()
    boxed[0::2] = left + pts[0::2] * (1 - left - right)
    boxed[1::2] = top + pts[1::2] * (1 - top - bottom)
    np.testing.assert_allclose(unletterbox(boxed, pad), pts, atol=1e-5)


def test_letterbox_scales_pixels_to_minus_one_one():
    img = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE), (0, 255, 51))
    x, pad = letterbox(img)
    assert pad == (0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(x[0, 100, 100], (-1.0, 1.0, 51 / 127.5 - 1), atol=1e-6)


def test_a_dot_lands_where_unletterbox_says():
    """A bright pixel in a 400x200 photo, found in the tensor and mapped back."""
    img = Image.new("RGB", (400, 200))
    img.putpixel((300, 50), (255, 255, 255))
    img.putpixel((301, 50), (255, 255, 255))
    img.putpixel((300, 51), (255, 255, 255))
    img.putpixel((301, 51), (255, 255, 255))
    x, pad = letterbox(img)
    y, xx = np.unravel_index(np.argmax(x[0, :, :, 0]), x.shape[1:3])
    back = unletterbox(np.asarray([(xx + 0.5) / INPUT_SIZE, (y + 0.5) / INPUT_SIZE], np.float32), pad)
    np.testing.assert_allclose(back * (400, 200), (301, 51), atol=400 / INPUT_SIZE)


# --- decoding -------------------------------------------------------------------------------

def test_decode_offsets_by_the_anchor_and_keeps_only_confident_anchors():
    anchors = ssd_anchors()
    raw = np.zeros((1, NUM_ANCHORS, 12), np.float32)
    logits = np.full((1, NUM_ANCHORS, 1), -1e4, np.float32)  # clipped to -100: score 0, no warning
    i = 1970  # a stride-32 anchor
    logits[0, i, 0] = 2.0
    logits[0, 5, 0] = -0.1  # sigmoid 0.475: under the 0.5 threshold
    raw[0, i] = [11.2, -22.4, 44.8, 89.6, 0, 0, 22.4, 22.4, -22.4, 0, 0, 0]  # pixels of the 224 input
    with np.errstate(all="raise"):
        scores, coords = decode(raw, logits, anchors, 0.5)
    assert scores.shape == (1,) and coords.shape == (1, 12)
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    cx, cy = anchors[i] + (0.05, -0.1)
    np.testing.assert_allclose(coords[0, :4], (cx - 0.1, cy - 0.2, cx + 0.1, cy + 0.2), atol=1e-6)
    np.testing.assert_allclose(coords[0, 4:6], anchors[i], atol=1e-6)
    np.testing.assert_allclose(coords[0, 6:8], anchors[i] + 0.1, atol=1e-6)
    np.testing.assert_allclose(coords[0, 8:10], anchors[i] + (-0.1, 0), atol=1e-6)


def test_decode_with_nobody_returns_empty_arrays():
    scores, coords = decode(np.zeros((1, NUM_ANCHORS, 12)), np.full((1, NUM_ANCHORS, 1), -5.0),
                            ssd_anchors(), 0.5)
    assert scores.shape == (0,) and coords.shape == (0, 12)


# --- weighted NMS ---------------------------------------------------------------------------

def _det(x0, y0, x1, y1, k=0.0):
    return [x0, y0, x1, y1, *([k] * 8)]


def test_weighted_nms_averages_each_cluster_by_score():
    coords = np.asarray([
        _det(0.10, 0.10, 0.50, 0.50, k=1.0),   # cluster A, best
        _det(0.12, 0.10, 0.52, 0.50, k=2.0),   # A (IoU ~0.9)
        _det(0.60, 0.60, 0.90, 0.90, k=5.0),   # cluster B, alone
        _det(0.30, 0.30, 0.70, 0.70, k=9.0),   # overlaps A by IoU ~0.14 < 0.3: its own
    ], np.float32)
    scores = np.asarray([0.9, 0.6, 0.7, 0.55], np.float32)
    out = weighted_nms(scores, coords, 0.3)
    assert [round(s, 2) for s, _ in out] == [0.9, 0.7, 0.55]  # best first, cluster keeps its best
    a = out[0][1]
    np.testing.assert_allclose(a[0], (0.9 * 0.10 + 0.6 * 0.12) / 1.5, atol=1e-6)
    np.testing.assert_allclose(a[4:], (0.9 * 1.0 + 0.6 * 2.0) / 1.5, atol=1e-6)
    np.testing.assert_allclose(out[1][1], coords[2])
    np.testing.assert_allclose(out[2][1], coords[3])


def test_weighted_nms_chains_do_not_merge_through_the_middle():
    """Suppression is relative to each cluster's best box: C overlaps B, B overlaps A, but C
    does not overlap A enough, so once B is absorbed by A, C survives on its own."""
    coords = np.asarray([_det(0.0, 0, 0.4, 1), _det(0.1, 0, 0.5, 1), _det(0.25, 0, 0.65, 1)], np.float32)
    out = weighted_nms(np.asarray([0.9, 0.8, 0.7], np.float32), coords, 0.3)
    assert len(out) == 2
    np.testing.assert_allclose(out[1][1], coords[2])


def test_weighted_nms_of_nothing():
    assert weighted_nms(np.empty(0, np.float32), np.empty((0, 12), np.float32), 0.3) == []


# --- region and windows ---------------------------------------------------------------------

def test_person_region_is_the_scaled_body_circle_square():
    kp = np.asarray([[200.0, 150.0], [200.0, 110.0], [0, 0], [0, 0]])  # radius 40
    r = person_region(kp, 0.8, 400, 300, 1.25)
    assert (r.left, r.top, r.right, r.bottom, r.score) == (150, 100, 250, 200, 0.8)


def test_person_region_is_clipped_to_the_image():
    kp = np.asarray([[10.2, 290.0], [10.2, 240.0], [0, 0], [0, 0]])  # radius 50 -> half side 62.5
    r = person_region(kp, 0.9, 400, 300, 1.25)
    assert (r.left, r.top, r.right, r.bottom) == (0, 227, 73, 300)
    whole = person_region(np.asarray([[200.0, 150.0], [200.0, -850.0], [0, 0], [0, 0]]), 0.9, 400, 300, 1.25)
    assert (whole.left, whole.top, whole.right, whole.bottom) == (0, 0, 400, 300)
    d = whole.to_dict(400, 300)
    assert d == {"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0, "score": 0.9}
    assert r.square == (10.2, 290.0, 62.5)  # before clipping: what training carries into a frame


def test_placed_region_carries_the_unclipped_square_into_the_frame():
    """Training's pasted copies: a photo whose person square was clipped by the photo's
    edges, pasted at half size into a wider frame, is cropped to the whole square there
    (scene around it included, as the server's crop of that person), clipped to the frame."""
    from convert.data import placed_region

    person = person_region(np.asarray([[100.0, 100.0], [100.0, 20.0], [0, 0], [0, 0]]), 0.9, 200, 200, 1.0)
    assert (person.left, person.top, person.right, person.bottom) == (20, 20, 180, 180)
    clipped = person_region(np.asarray([[100.0, 150.0], [100.0, 30.0], [0, 0], [0, 0]]), 0.9, 200, 200, 1.0)
    assert (clipped.left, clipped.top, clipped.right, clipped.bottom) == (0, 30, 200, 200)
    placed = (300, 100, 400, 200)  # the 200x200 photo at half size

    def box(r):
        return r.left, r.top, r.right, r.bottom

    assert box(placed_region(clipped, (200, 200), placed)) == (300, 115, 400, 200)  # clipped to the photo
    carried = placed_region(clipped, (200, 200), placed, (800, 600))
    assert box(carried) == (290, 115, 410, 235)
    assert carried.square == (350.0, 175.0, 60.0)  # the whole square, for the edge-padded crop
    assert box(placed_region(clipped, (200, 200), (0, 500, 100, 600), (800, 600))) == (0, 515, 110, 600)
    assert box(placed_region(None, (200, 200), placed, (800, 600))) == placed  # nobody: the pasted photo
    assert placed_region(None, (200, 200), placed, (800, 600)).square is None
    assert box(placed_region(person, (200, 200), placed, (800, 600))) == (310, 110, 390, 190)


def test_edge_crop_keeps_proportions_and_repeats_the_edge_where_the_square_leaves_the_image():
    """A square wider than a portrait photo: "edge" keeps the person's proportions (the
    photo's columns land in the middle of the input, its edge columns repeated outside),
    "clip" stretches the photo to the square."""
    from yogapose.metadata import Preprocessing
    from yogapose.preprocess import Preprocessor

    pixels = np.zeros((200, 100, 3), np.uint8)
    pixels[:, :50] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 50:] = (0, 0, 255)
    img = Image.fromarray(pixels)
    person = PersonBox(0, 0, 100, 200, 0.9, (50.0, 100.0, 100.0))  # a 200 px square around a 100 px wide photo
    for outside, red_columns in (("edge", 75), ("clip", 75)):
        crop = PersonCrop(outside=outside)
        prep = Preprocessing(person_crop=crop)
        pre = Preprocessor(prep, detector=object())  # type: ignore[arg-type]  # crop() needs no detector
        out = np.asarray(pre.crop(img, person).image)
        assert out.shape == (150, 150, 3)
        red = (out[75, :, 0] > 128).sum()
        assert abs(red - red_columns) <= 1
        if outside == "edge":  # the photo spans the middle 75 columns; red and blue repeat outward
            assert (out[:, :37, 0] > 128).all() and (out[:, -37:, 2] > 128).all()
            assert abs(int((out[75, :, 2] > 128).sum()) - 75) <= 1
    inside = PersonBox(0, 50, 100, 150, 0.9, (50.0, 100.0, 50.0))  # within the photo: a plain crop
    edge = Preprocessor(Preprocessing(person_crop=PersonCrop(outside="edge")), detector=object())  # type: ignore[arg-type]
    clip = Preprocessor(Preprocessing(person_crop=PersonCrop(outside="clip")), detector=object())  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(edge.crop(img, inside).image), np.asarray(clip.crop(img, inside).image))
    with pytest.raises(ValueError, match="outside"):
        PersonCrop(outside="wrap")


@pytest.mark.parametrize("fraction", [0.75, 0.5])
@pytest.mark.parametrize("size", [(1200, 900), (900, 1200), (400, 400), (1001, 333), (600, 450)])
def test_tiles_cover_the_image_with_flush_edges(size, fraction):
    w, h = size
    windows = tiles(w, h, fraction, 0.5)
    side = int(min(w, h) * fraction)
    step = int(side * 0.5)
    for starts in ({x0 for x0, *_ in windows}, {y0 for _, y0, *_ in windows}):
        gaps = np.diff(sorted(starts))
        assert (gaps >= step / 2).all(), sorted(starts)  # no near-copies of a window
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == side == y1 - y0
        assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert len(set(windows)) == len(windows)


# --- the real detector ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    if not DETECTOR.exists():
        pytest.skip(f"{DETECTOR.relative_to(REPO)} is not extracted (bash .ci/setup extracts it)")
    return PersonDetector(DETECTOR, PersonCrop())


def test_detector_rejects_a_file_with_another_hash(tmp_path):
    fake = tmp_path / "pose_detection.tflite"
    fake.write_bytes(b"not the detector")
    with pytest.raises(RuntimeError, match="sha256"):
        PersonDetector(fake, PersonCrop())


def test_real_photo_gives_a_person_and_a_blank_image_none(detector, shared_dir):
    path = sorted((shared_dir / "data" / "yoga" / "val" / "warrior").glob("*.jpg"))[0]
    with Image.open(path) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    box = detector.find_person(img)
    assert box is not None, path
    w, h = img.size
    assert 0 <= box.left < box.right <= w and 0 <= box.top < box.bottom <= h
    assert 0.5 <= box.score <= 1.0
    # the body is most of a tightly framed yoga photo
    assert (box.right - box.left) * (box.bottom - box.top) >= 0.2 * w * h
    for blank in (Image.new("RGB", (640, 480)), Image.new("RGB", (300, 300), (255, 255, 255))):
        assert detector.detect(blank) == []
        assert detector.find_person(blank) is None  # the 640x480 one also tries the windows


def _two_people(shared_dir: Path) -> tuple[Image.Image, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """A 600x450 wide shot: a warrior large at the left, a tree small at the top right;
    returns the image and where each photo went."""
    val = shared_dir / "data" / "yoga" / "val"
    canvas = Image.new("RGB", (600, 450), (200, 200, 190))
    placed = []
    for cls, height, (x, y) in (("warrior", 280, (20, 150)), ("tree", 150, (420, 30))):
        with Image.open(sorted((val / cls).glob("*.jpg"))[0]) as im:
            photo = im.convert("RGB")
        w = round(photo.width * height / photo.height)
        canvas.paste(photo.resize((w, height)), (x, y))
        placed.append((x, y, x + w, y + height))
    return canvas, placed[0], placed[1]


def _centre_in(box: PersonBox, rect: tuple[int, int, int, int]) -> bool:
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


def test_find_people_offers_the_small_person_too(detector, shared_dir):
    img, big, small = _two_people(shared_dir)
    (pick,) = detector.find_people(img, 1)  # the detector alone: the largest body
    assert _centre_in(pick, big)
    assert detector.find_person(img) == pick
    offered = detector.find_people(img, 3)
    assert 2 <= len(offered) <= 3
    assert [b.score for b in offered] == sorted((b.score for b in offered), reverse=True)
    assert any(_centre_in(b, small) for b in offered), offered  # found in the windows
    assert any(_centre_in(b, big) for b in offered)


def _small_person_in_an_empty_scene(shared_dir: Path) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A 600x450 park scene with a tree pose pasted 180 px tall (40 % of the height, as in
    the framing test); returns the image and where the photo went."""
    with Image.open(shared_dir / "data" / "yoga" / "val" / "tree" / "115aacca04622e86.jpg") as im:
        photo = im.convert("RGB").resize((112, 180))
    with Image.open(shared_dir / "data" / "negatives" / "val" / "no_person" / "5f43e9d137a17e7b.jpg") as im:
        canvas = im.convert("RGB").resize((600, 450))
    canvas.paste(photo, (185, 155))
    return canvas, (185, 155, 185 + 112, 155 + 180)


def test_window_bodies_need_their_hip_inside_then_smaller_windows_find_the_person(detector, shared_dir):
    img, placed = _small_person_in_an_empty_scene(shared_dir)
    assert detector.detect(img) == []  # nobody in the whole image
    # Without the rule, a window offers a "body" extrapolated from its edge: the crop would
    # be the whole frame, the person a small part of it.
    loose = PersonDetector(DETECTOR, replace(detector.config, hip_in_window=False, fine_tile_fraction=0.0))
    (bogus,) = loose.find_people(img, 1)
    assert not _centre_in(bogus, placed) and bogus.right - bogus.left > 3 * (placed[2] - placed[0])
    # With it, the coarse windows show nobody and the finer ones find the tree.
    coarse_only = PersonDetector(DETECTOR, replace(detector.config, fine_tile_fraction=0.0))
    assert coarse_only.find_people(img, 3) == []
    found = detector.find_people(img, 3)
    assert found and all(_centre_in(b, placed) for b in found), found
    assert all(b.right - b.left <= 2 * (placed[2] - placed[0]) for b in found)


def test_a_panorama_is_not_searched_in_windows(detector, monkeypatch):
    """A window pass costs one invoke per window: an image so elongated that a pass needs more
    than max_windows is not searched, so a 6000x600 image with nobody costs 1 invoke, not 170."""
    cfg = detector.config
    wide = Image.new("RGB", (6000, 600), (128, 128, 128))
    assert len(tiles(6000, 600, cfg.tile_fraction, cfg.tile_overlap)) > cfg.max_windows
    two_to_one = Image.new("RGB", (1200, 600), (128, 128, 128))
    calls: list[tuple[int, int]] = []
    real = detector.detect
    monkeypatch.setattr(detector, "detect", lambda im: calls.append(im.size) or real(im))
    assert detector.find_people(wide, 3) == []
    assert calls == [wide.size]
    calls.clear()
    assert detector.find_people(two_to_one, 3) == []  # searched: both passes, within the bound
    expected = 1 + sum(len(tiles(1200, 600, f, cfg.tile_overlap)) for f in (cfg.tile_fraction, cfg.fine_tile_fraction))
    assert len(calls) == expected <= 1 + 2 * cfg.max_windows


def test_the_window_search_stops_at_the_request_deadline(detector, monkeypatch):
    """A window search is up to 49 invokes (slow on a small Lambda): the deadline is checked
    before each window, so it ends in the request's 504 rather than in Lambda's timeout."""
    from yogapose.deadline import Deadline, DeadlineExceeded

    class Countdown(Deadline):
        """Expires after ``left`` checks (time itself is not what is tested)."""

        def __init__(self, left: int) -> None:
            super().__init__(float("inf"))
            self.left = left

        def check(self, what: str) -> None:
            self.left -= 1
            if self.left < 0:
                raise DeadlineExceeded(f"the request ran out of time before {what}")

    nobody = Image.new("RGB", (1200, 600), (128, 128, 128))
    calls: list[tuple[int, int]] = []
    real = detector.detect
    monkeypatch.setattr(detector, "detect", lambda im: calls.append(im.size) or real(im))
    with pytest.raises(DeadlineExceeded, match="search for a person"):
        detector.find_people(nobody, 3, Countdown(2))
    assert len(calls) == 1 + 2  # the whole image, then two windows: stopped at the third
    calls.clear()
    assert detector.find_people(nobody, 3, Deadline.never()) == []
    assert len(calls) > 3


def test_hip_inside_is_the_region_centre_in_the_window():
    from yogapose.person import _hip_inside
    box = PersonBox(0, 0, 10, 10, 0.9, (50.0, 60.0, 40.0))
    assert _hip_inside(box, (0, 0, 100, 100))
    assert not _hip_inside(box, (0, 0, 40, 100))
    assert not _hip_inside(box, (0, 70, 100, 200))


def test_a_record_from_before_the_window_rules_keeps_the_old_search():
    d = PersonCrop().to_dict()
    assert PersonCrop.from_dict(d) == PersonCrop()
    assert (PersonCrop().hip_in_window, PersonCrop().fine_tile_fraction) == (True, 0.5)
    for key in ("hip_in_window", "fine_tile_fraction", "max_windows"):
        del d[key]
    old = PersonCrop.from_dict(d)
    assert (old.hip_in_window, old.fine_tile_fraction) == (False, 0.0)
    assert old.max_windows == PersonCrop.max_windows  # a safety bound applies whatever the record


def test_small_photos_are_not_searched_in_windows(detector, shared_dir, monkeypatch):
    """A close-up (shorter side < search_min_side) costs one detector invoke, whatever the limit."""
    path = sorted((shared_dir / "data" / "yoga" / "val" / "warrior").glob("*.jpg"))[0]
    with Image.open(path) as im:
        img = im.convert("RGB").resize((340, 340))
    assert min(img.size) < detector.config.search_min_side
    assert min(img.size) * detector.config.tile_fraction >= detector.config.tile_min_side  # windows possible
    calls = []
    real = detector.detect
    monkeypatch.setattr(detector, "detect", lambda im: calls.append(im.size) or real(im))
    assert len(detector.find_people(img, 3)) >= 1
    assert calls == [img.size]


def test_a_close_up_in_a_big_photo_is_not_searched_in_windows(detector, shared_dir, monkeypatch):
    """Shorter side >= search_min_side, but the body found is most of the photo: no second look."""
    path = sorted((shared_dir / "data" / "yoga" / "val" / "warrior").glob("*.jpg"))[0]
    with Image.open(path) as im:
        img = im.convert("RGB").resize((600, 600))
    assert min(img.size) >= detector.config.search_min_side
    calls = []
    real = detector.detect
    monkeypatch.setattr(detector, "detect", lambda im: calls.append(im.size) or real(im))
    (body, *_) = detector.find_people(img, 3)
    assert max(body.right - body.left, body.bottom - body.top) >= detector.config.search_below * 600
    assert calls == [img.size]


def test_distinct_drops_the_same_body_seen_twice():
    from yogapose.person import _distinct

    a = PersonBox(0, 0, 100, 100, 0.9)
    same = PersonBox(5, 5, 100, 100, 0.8)  # IoU 0.9
    other = PersonBox(200, 0, 260, 60, 0.7)
    assert _distinct([a, same, other], 3) == [a, other]
    assert _distinct([a, same, other], 1) == [a]
    assert _distinct([], 3) == []
