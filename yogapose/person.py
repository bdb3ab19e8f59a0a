"""Find the person first: MediaPipe's BlazePose person detector on LiteRT, decoded in numpy.

Why: the classifier was trained on tightly framed photos and fails when the person is small
in a wider shot. Cropping the detected person before classifying makes framing irrelevant.

The detector is ``mediapipe/modules/pose_detection/pose_detection.tflite`` (Apache-2.0),
taken hash-checked out of the pinned ``mediapipe`` wheel at set-up/build time (see
``localtools/assets.py``); the mediapipe package itself is never installed for serving.
Its post-processing is re-implemented here from MediaPipe's published graph
(``mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt`` and
``pose_detection_to_roi.pbtxt``, 0.10.x):

* input: the image letterboxed (aspect ratio kept, zero border) into 224x224, RGB scaled to
  [-1, 1];
* ``SsdAnchorsCalculator``: 5 layers, strides 8/16/32/32/32, scales 0.1484375..0.75, one
  aspect ratio plus the interpolated scale, ``fixed_anchor_size`` -> 2,254 unit anchors
  (28x28x2 + 14x14x2 + 7x7x6), centres at (cell + 0.5) / grid;
* ``TensorsToDetectionsCalculator``: 12 regressors per anchor (box centre x/y, w/h, then
  four keypoints x/y), divided by 224 and offset by the anchor centre; score = sigmoid of
  the logit clipped to +/-100; kept if >= 0.5;
* weighted non-maximum suppression at IoU 0.3 (each kept detection is the score-weighted
  mean of the detections it suppresses);
* the person region (``AlignmentPointsRectsCalculator`` + ``RectTransformationCalculator``):
  keypoint 0 is the mid-hip centre, keypoint 1 a point on the circle that encloses the whole
  body; the region is the square centred on keypoint 0 with side 2 x radius, scaled
  (MediaPipe's landmark ROI by 1.25; our crop by the metadata's ``scale``, 1.0: the
  classifier learns from photos framed tighter than the landmark model's input).

The numbers that decide behaviour (score threshold, NMS IoU, region scale, the window search
and candidate count) are data in the model metadata (:class:`~yogapose.metadata.PersonCrop`);
the anchor layout is the detector file's, fixed by its sha256 there too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .deadline import Deadline
from .metadata import PersonCrop, sha256_file

try:  # the maintained LiteRT wheel (Python 3.12, numpy 2)
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - legacy environments only
    from tflite_runtime.interpreter import Interpreter

INPUT_SIZE = 224
NUM_ANCHORS = 2254
_STRIDES = (8, 16, 32, 32, 32)
_MIN_SCALE, _MAX_SCALE = 0.1484375, 0.75


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = _STRIDES) -> np.ndarray:
    """Anchor centres (N, 2) as x, y in [0, 1], in the order the detector's outputs use.

    Consecutive layers with the same stride share one grid (MediaPipe's
    ``SsdAnchorsCalculator``); each layer adds two anchors per cell (aspect ratio 1 and the
    interpolated scale). With ``fixed_anchor_size`` every anchor is 1x1, so only centres
    matter.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = 2 * (last - layer)
        grid = int(np.ceil(input_size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        xy = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(xy, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    """One person in normalised image coordinates (0..1 of width / height)."""

    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax of the face-ish box
    keypoints: np.ndarray  # (4, 2): mid-hip, full-body circle, mid-shoulder, upper-body circle


@dataclass(frozen=True)
class PersonBox:
    """The crop region in pixels of the decoded image, and how sure the detector was."""

    left: int
    top: int
    right: int
    bottom: int
    score: float
    # The square before clipping to the image: centre x, y and half side in pixels. Training
    # carries it into a wider frame (the crop a correct pick would give there).
    square: tuple[float, float, float] | None = None

    def to_dict(self, width: int, height: int) -> dict[str, float]:
        """Relative coordinates (0..1), so the answer does not depend on decode scale."""
        return {
            "x": round(self.left / width, 4),
            "y": round(self.top / height, 4),
            "width": round((self.right - self.left) / width, 4),
            "height": round((self.bottom - self.top) / height, 4),
            "score": round(self.score, 4),
        }


def letterbox(img: Image.Image, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """RGB image -> (1, size, size, 3) float32 in [-1, 1], aspect kept, black border; and
    the padding (left, top, right, bottom) as fractions of ``size``."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = img.resize((nw, nh), Image.Resampling.BILINEAR) if (nw, nh) != (w, h) else img
    x = np.full((1, size, size, 3), -1.0, dtype=np.float32)
    left, top = (size - nw) // 2, (size - nh) // 2
    np.multiply(np.asarray(small, dtype=np.float32), np.float32(1 / 127.5), out=x[0, top:top + nh, left:left + nw])
    x[0, top:top + nh, left:left + nw] -= 1.0
    return x, (left / size, top / size, (size - nw - left) / size, (size - nh - top) / size)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
           min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs -> (scores (K,), coords (K, 12)) of the anchors over ``min_score``.

    ``coords`` holds xmin, ymin, xmax, ymax, then the four keypoints' x, y, in the
    letterboxed input's normalised coordinates.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float32), -100.0, 100.0)
    with np.errstate(over="ignore"):  # exp(100) overflows float32 to inf: score 0, as intended
        scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return np.empty(0, np.float32), np.empty((0, 12), np.float32)
    r = raw_boxes.reshape(-1, 12)[keep].astype(np.float32) / np.float32(INPUT_SIZE)
    a = anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    out = np.empty((keep.size, 12), np.float32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    out[:, 4::2] = r[:, 4::2] + a[:, :1]
    out[:, 5::2] = r[:, 5::2] + a[:, 1:]
    return scores[keep], out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(scores: np.ndarray, coords: np.ndarray, iou: float) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's WEIGHTED non-maximum suppression: best first, each cluster (IoU > ``iou``
    with its best) averaged by score; the cluster keeps its best score."""
    order = np.argsort(-scores, kind="stable")
    scores, coords = scores[order], coords[order]
    alive = np.ones(len(scores), dtype=bool)
    out: list[tuple[float, np.ndarray]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = alive & (_iou(coords[i, :4], coords[:, :4]) > iou)
        overlap[i] = True
        w = scores[overlap]
        out.append((float(scores[i]), (coords[overlap] * w[:, None]).sum(0) / w.sum()))
        alive &= ~overlap
    return out


def unletterbox(coords: np.ndarray, pad: tuple[float, float, float, float]) -> np.ndarray:
    """Letterboxed normalised coordinates -> the original image's (0..1 of width/height)."""
    left, top, right, bottom = pad
    out = coords.copy()
    out[0::2] = (coords[0::2] - left) / (1.0 - left - right)
    out[1::2] = (coords[1::2] - top) / (1.0 - top - bottom)
    return out


def person_region(keypoints: np.ndarray, score: float, width: int, height: int, scale: float) -> PersonBox:
    """The square around the whole body in pixels: its part inside the image (the box the
    answer reports) and the whole square (``square``: what the crop is cut from,
    :meth:`yogapose.preprocess.Preprocessor.crop`, as ``PersonCrop.outside`` says).

    ``keypoints`` are in pixels. Centre: the mid-hip keypoint; side: the body circle's
    diameter times ``scale`` (the margin that keeps stretched arms and legs inside).
    """
    hip, edge = keypoints[0], keypoints[1]
    half = float(np.hypot(*(edge - hip))) * scale
    left = int(np.floor(max(0.0, hip[0] - half)))
    top = int(np.floor(max(0.0, hip[1] - half)))
    right = int(np.ceil(min(float(width), hip[0] + half)))
    bottom = int(np.ceil(min(float(height), hip[1] + half)))
    return PersonBox(left, top, right, bottom, score, (float(hip[0]), float(hip[1]), half))


def tiles(width: int, height: int, fraction: float, overlap: float) -> list[tuple[int, int, int, int]]:
    """Square windows of side ``fraction`` x the shorter side, overlapping by ``overlap``,
    covering the image (the last row/column flush with the edges)."""
    side = max(1, int(min(width, height) * fraction))
    step = max(1, int(side * (1.0 - overlap)))
    xs = _starts(width, side, step)
    ys = _starts(height, side, step)
    return [(x, y, x + side, y + side) for y in ys for x in xs]


def _starts(length: int, side: int, step: int) -> list[int]:
    """Window offsets along one side: every ``step``, the last flush with the edge. A last
    regular window less than half a step from the edge is moved there rather than joined by
    a near-copy (450 px, side 225, step 112: 0, 112, 225, not 0, 112, 224, 225)."""
    starts = list(range(0, max(1, length - side + 1), step))
    flush = length - side
    if starts[-1] != flush:
        if len(starts) > 1 and flush - starts[-1] < step / 2 and starts[-2] + side >= flush:
            starts[-1] = flush
        else:
            starts.append(flush)
    return starts


class PersonDetector:
    """A loaded, hash-verified BlazePose detector (one interpreter; a lock serialises use)."""

    def __init__(self, path: Path | str, config: PersonCrop, num_threads: int = 1) -> None:
        self.path = Path(path)
        self.config = config
        if not self.path.is_file():
            raise RuntimeError(
                f"person detector not found: {self.path} (run `bash .ci/setup`, which extracts it "
                "from the pinned mediapipe wheel)"
            )
        got = sha256_file(self.path)
        if got != config.detector_sha256:
            raise RuntimeError(
                f"{self.path.name}: sha256 {got[:12]}... does not match the model metadata "
                f"({config.detector_sha256[:12]}...)"
            )
        self._interp = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()
        outs = {tuple(o["shape"]): int(o["index"]) for o in self._interp.get_output_details()}
        if tuple(inp[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise RuntimeError(f"{self.path.name}: unexpected input shape {list(inp[0]['shape'])}")
        try:
            self._boxes_index = outs[(1, NUM_ANCHORS, 12)]
            self._scores_index = outs[(1, NUM_ANCHORS, 1)]
        except KeyError:
            raise RuntimeError(f"{self.path.name}: unexpected outputs {sorted(outs)}") from None
        self._in_index = int(inp[0]["index"])
        self._anchors = ssd_anchors()
        self._lock = threading.Lock()
        self.detect(Image.new("RGB", (INPUT_SIZE, INPUT_SIZE)))  # warm-up: XNNPACK packs weights

    def detect(self, img: Image.Image) -> list[Detection]:
        """All people in ``img`` (RGB), best first, in the image's normalised coordinates."""
        x, pad = letterbox(img)
        with self._lock:
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            raw_boxes = self._interp.get_tensor(self._boxes_index)
            raw_scores = self._interp.get_tensor(self._scores_index)
        scores, coords = decode(raw_boxes, raw_scores, self._anchors, self.config.min_score)
        found = weighted_nms(scores, coords, self.config.nms_iou)
        return [
            Detection(score, tuple(float(v) for v in c[:4]), c[4:].reshape(4, 2))  # type: ignore[arg-type]
            for score, c in ((s, unletterbox(c, pad)) for s, c in found)
        ]

    def find_people(self, img: Image.Image, limit: int = 1,
                    deadline: Deadline | None = None) -> list[PersonBox]:
        """Crop regions of the people in ``img``, for the classifier to choose from.

        First the whole image. The detector was trained on people who fill much of the
        frame and misses small ones (a person at 40 % of a 1200x900 frame's height: ~40 %
        found), so when it finds nobody in an image big enough to zoom into, it looks again
        in overlapping windows (``tile_fraction`` of the shorter side): 92 % found at 40 %
        framing, at the cost of more invokes only for photos without an obvious person. A
        window's detection whose mid-hip lies outside the window is dropped (``hip_in_window``):
        the detector extrapolated a large body from a part cut by the window's edge, and its
        "crop" was most of the frame. When still nobody is found, smaller windows
        (``fine_tile_fraction``) are searched.

        ``limit`` 1: the detector's pick alone, the largest body in the whole image (the
        person in front), else the most confident in the windows. ``limit`` > 1: on wide
        shots the largest body is often not the one posing (a passer-by at the edge, a dog),
        so a photo big enough to hold a small person (shorter side >= ``search_min_side``)
        whose largest body is not a close-up (narrower than ``search_below`` x its longer side)
        is searched in the windows too, and the ``limit`` most confident distinct bodies are
        returned for the classifier to judge (:func:`yogapose.answer.most_in_scope`).

        ``deadline`` is checked before each window: a search is up to 49 invokes, slow on a
        small Lambda, and must end in the request's 504, not in Lambda's timeout.
        """
        w, h = img.size
        cfg = self.config
        whole = [r for r in (self._region(d, (0, 0, w, h), w, h) for d in self.detect(img)) if _usable(r)]
        if limit <= 1 and whole:
            return [max(whole, key=_area_then_score)]
        windows: list[PersonBox] = []
        largest = max((max(r.right - r.left, r.bottom - r.top) for r in whole), default=0)
        small = min(w, h) >= cfg.search_min_side and largest < cfg.search_below * max(w, h)
        if not whole or small:
            windows = self._search(img, cfg.tile_fraction, deadline)
            if not whole and not windows:  # nobody yet: maybe someone smaller still
                windows = self._search(img, cfg.fine_tile_fraction, deadline)
        if limit <= 1:
            return [max(windows, key=lambda r: r.score)] if windows else []
        return _distinct(sorted(whole + windows, key=lambda r: -r.score), limit)

    def _search(self, img: Image.Image, fraction: float, deadline: Deadline | None) -> list[PersonBox]:
        """Bodies found in overlapping windows of ``fraction`` x the shorter side (none when
        that is 0 or smaller than ``tile_min_side``: too little to zoom into; none when the
        image is so elongated that it would take more than ``max_windows`` windows)."""
        w, h = img.size
        cfg = self.config
        if fraction <= 0 or min(w, h) * fraction < cfg.tile_min_side:
            return []
        windows = tiles(w, h, fraction, cfg.tile_overlap)
        if len(windows) > cfg.max_windows:
            return []
        found: list[PersonBox] = []
        for window in windows:
            if deadline is not None:
                deadline.check("the search for a person finished")
            for d in self.detect(img.crop(window)):
                r = self._region(d, window, w, h)
                if _usable(r) and (not cfg.hip_in_window or _hip_inside(r, window)):
                    found.append(r)
        return found

    def find_person(self, img: Image.Image) -> PersonBox | None:
        """The detector's pick alone (``find_people(img, 1)``), or None."""
        found = self.find_people(img, 1)
        return found[0] if found else None

    def _region(self, d: Detection, window: tuple[int, int, int, int], width: int, height: int) -> PersonBox:
        """A detection in ``window`` (normalised to it) -> its crop region in the image."""
        x0, y0, x1, y1 = window
        return person_region(d.keypoints * (x1 - x0, y1 - y0) + (x0, y0), d.score, width, height, self.config.scale)


# Regions overlapping this much are one body seen twice (the whole image and a window).
_SAME_BODY_IOU = 0.6


def _distinct(regions: list[PersonBox], limit: int) -> list[PersonBox]:
    """The first ``limit`` regions that are not the same body as an earlier one."""
    kept: list[PersonBox] = []
    for r in regions:
        if all(_box_iou(r, k) < _SAME_BODY_IOU for k in kept):
            kept.append(r)
            if len(kept) == limit:
                break
    return kept


def _hip_inside(r: PersonBox, window: tuple[int, int, int, int]) -> bool:
    """Whether the region's centre (the mid-hip keypoint) lies inside ``window``."""
    if r.square is None:
        return True
    cx, cy, _ = r.square
    return window[0] <= cx <= window[2] and window[1] <= cy <= window[3]


def _box_iou(a: PersonBox, b: PersonBox) -> float:
    iw = max(0, min(a.right, b.right) - max(a.left, b.left))
    ih = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    inter = iw * ih
    union = (a.right - a.left) * (a.bottom - a.top) + (b.right - b.left) * (b.bottom - b.top) - inter
    return inter / union if union > 0 else 0.0


def _usable(r: PersonBox) -> bool:
    return r.right - r.left >= 2 and r.bottom - r.top >= 2


def _area_then_score(r: PersonBox) -> tuple[int, float]:
    return (r.right - r.left) * (r.bottom - r.top), r.score
