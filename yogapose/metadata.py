"""The model metadata file: the single source of truth for labels, input and preprocessing.

The converter (``convert/``) writes ``<model>.json`` next to ``<model>.tflite``; the server
reads it. Nothing else in the code base hard-codes labels, the input size or the scaling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


# How a person's square is cut where it leaves the image (PersonCrop.outside).
CROP_OUTSIDE = ("edge", "clip")


@dataclass(frozen=True)
class PersonCrop:
    """Find the person first (:mod:`yogapose.person`), then classify only that crop.

    The detector file sits next to the model; its sha256 pins the exact flatbuffer (and
    with it the anchor layout the decoder assumes).
    """

    detector_file: str = "pose_detection.tflite"
    detector_sha256: str = "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"
    source: str = "mediapipe==0.10.14 wheel: mediapipe/modules/pose_detection/pose_detection.tflite (Apache-2.0)"
    min_score: float = 0.5  # detection score threshold (MediaPipe's own)
    nms_iou: float = 0.3  # weighted NMS overlap threshold (MediaPipe's own)
    # Body-circle diameter x this = crop side. MediaPipe's landmark ROI uses 1.25; for the
    # classifier that framed a small person at ~60 % of the crop, looser than the tight
    # photos it learns from (val: framing 40 % 0.78 -> 0.85 and real photos 0.926 -> 0.938
    # macro recall with 1.0 on the same weights; 0.85 cut limbs on real photos).
    scale: float = 1.0
    # Decode (JPEG draft) no smaller than this on both sides, so a person filling 40 % of
    # the frame still gives a crop of about the model's input size.
    decode_min_side: int = 300
    # Second look for small people: windows of this fraction of the shorter side, when
    # that is at least ``tile_min_side`` pixels (0 disables it).
    tile_fraction: float = 0.75
    tile_overlap: float = 0.5
    tile_min_side: int = 224
    # A window's detection counts only if its mid-hip keypoint lies inside that window: one
    # whose hip is outside is a body the detector extrapolated from a part at the window's
    # edge (framing 40 %: about 20 of the 37 photos lost had such a "body", 5-36x the person).
    hip_in_window: bool = True
    # Third look, for a person smaller still: when neither the whole image nor those windows
    # show anyone, windows of this fraction of the shorter side (when that is at least
    # ``tile_min_side`` pixels; 0 disables it). Framing 40 %, same weights: macro recall
    # 0.878 -> 0.917 with ``hip_in_window`` (0.883 with either alone). Costs more detector
    # invokes only on photos where nobody was found (19 in all at 600x450, ~0.28 s here).
    fine_tile_fraction: float = 0.5
    # A window pass that would need more windows than this is skipped: only a panorama gets
    # there (the two passes need 6 and 12 windows at 4:3, 8 and 18 at 16:9, 8 and 21 at 2:1;
    # the finer one is skipped from about 2.5:1), and one detector invoke per window would
    # let a 20000x500 image cost ~700 invokes (~10 s). Bounds a request at 1 + 2 x this.
    max_windows: int = 24
    # Up to this many detected bodies (most confident first) are classified and the one that
    # looks most like one of the six poses (the open-set score) is answered for; 1 = the
    # detector's pick alone (the largest body). On wide shots the detector's pick is often a
    # passer-by, a dog or a loose circle (framing test, 40 %: 0.73 macro recall with it,
    # 0.83 with the classifier choosing among 3, 0.91 with the right crop).
    candidates: int = 3
    # With candidates > 1, a photo whose shorter side (decoded) is at least this is also
    # searched in the windows even when the whole image shows someone: big enough to hold a
    # small person. Smaller photos (e.g. 300 px) are close-ups and cost one detector invoke.
    search_min_side: int = 360
    # ... and only when the largest body found in the whole image is smaller than this
    # fraction of the image's longer side: a close-up's body (the person posing) needs no
    # second look, which keeps phone photos of one person at one detector invoke.
    search_below: float = 0.7
    # Where the square leaves the image: "clip" crops to the image and stretches that to the
    # input square; "edge" keeps the square (the outside filled by repeating the image's edge
    # pixels), so a person photographed in portrait keeps its proportions. On weights
    # trained with "clip", "edge" got 13 of 13 such chair photos right (clip: 10), but a
    # model retrained with "edge" (2026-12-07, same recipe otherwise) was no better on real
    # val photos (macro recall 0.932 vs 0.936, chair 0.79) though better out of scope (FPR at
    # 95 % 0.090 vs 0.112): "clip" is the shipped recipe, "edge" an option for the next one.
    outside: str = "clip"

    def __post_init__(self) -> None:
        if self.outside not in CROP_OUTSIDE:
            raise ValueError(f"person_crop.outside {self.outside!r} is not one of {CROP_OUTSIDE}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector_file": self.detector_file,
            "detector_sha256": self.detector_sha256,
            "source": self.source,
            "min_score": self.min_score,
            "nms_iou": self.nms_iou,
            "scale": self.scale,
            "decode_min_side": self.decode_min_side,
            "tile_fraction": self.tile_fraction,
            "tile_overlap": self.tile_overlap,
            "tile_min_side": self.tile_min_side,
            "hip_in_window": self.hip_in_window,
            "fine_tile_fraction": self.fine_tile_fraction,
            "max_windows": self.max_windows,
            "candidates": self.candidates,
            "search_min_side": self.search_min_side,
            "search_below": self.search_below,
            "outside": self.outside,
            "policy": "bodies detected in the whole image (and, when it finds nobody, or the photo's "
                      "shorter side is >= search_min_side and its largest body is narrower than search_below x "
                      "the longer side, in overlapping windows; a window's body counts only if its mid-hip is "
                      "inside the window (hip_in_window); nobody in the image or the windows: smaller windows, "
                      "fine_tile_fraction of the shorter side; a pass needing more than max_windows windows is "
                      "skipped); the `candidates` most "
                      "confident are classified and the one most in scope (open-set score) answers (with 1: "
                      "the largest body, else the most confident in the windows); region: square around the "
                      "mid-hip keypoint, side = body-circle diameter x scale (where it leaves the image: "
                      "`outside`); no person -> the whole image",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PersonCrop:
        return cls(
            detector_file=str(d["detector_file"]),
            detector_sha256=str(d["detector_sha256"]),
            source=str(d.get("source", "")),
            min_score=float(d["min_score"]),
            nms_iou=float(d["nms_iou"]),
            scale=float(d["scale"]),
            decode_min_side=int(d["decode_min_side"]),
            tile_fraction=float(d["tile_fraction"]),
            tile_overlap=float(d["tile_overlap"]),
            tile_min_side=int(d["tile_min_side"]),
            # absent: a model from before the options (windows as they were then)
            hip_in_window=bool(d.get("hip_in_window", False)),
            fine_tile_fraction=float(d.get("fine_tile_fraction", 0.0)),
            max_windows=int(d.get("max_windows", cls.max_windows)),  # a safety bound: on whatever the record
            candidates=int(d.get("candidates", cls.candidates)),
            search_min_side=int(d.get("search_min_side", cls.search_min_side)),
            search_below=float(d.get("search_below", cls.search_below)),
            outside=str(d.get("outside", "clip")),  # absent: a model from before the option
        )


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the input tensor.

    Matches Keras' Xception convention (``preprocess_input`` mode "tf": ``x / 127.5 - 1``)
    on an image resized without keeping the aspect ratio, like ``load_img(target_size=...)``.
    """

    size: tuple[int, int] = (150, 150)  # (width, height)
    interpolation: str = "bilinear"  # Pillow resampling filter name
    jpeg_draft: bool = True  # let libjpeg downscale by 1/2..1/8 during decode
    scale_divisor: float = 127.5
    scale_offset: float = -1.0
    color_mode: str = "RGB"
    exif_transpose: bool = True
    alpha_background: tuple[int, int, int] = (255, 255, 255)
    person_crop: PersonCrop | None = None  # None: classify the whole image
    # Test-time flip, only for unsure crops: when the top two of the model's outputs (softmax
    # at temperature 1, all outputs) are closer than this, the crop is classified mirrored
    # too and the two logit vectors averaged (every pose is left/right symmetric, and
    # training flips). Costs one more inference on those crops only; 0 = never, 1 = always.
    flip_below_margin: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_below_margin <= 1.0:
            raise ValueError(f"flip_below_margin {self.flip_below_margin!r} is not within 0..1")
        if self.interpolation not in INTERPOLATIONS:  # else every request would fail, not the load
            raise ValueError(f"resize interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_crop": self.person_crop.to_dict() if self.person_crop else None,
            "flip_below_margin": self.flip_below_margin,
            "color_mode": self.color_mode,
            "exif_transpose": self.exif_transpose,
            "alpha_background": list(self.alpha_background),
            "resize": {
                "size": list(self.size),
                "interpolation": self.interpolation,
                "keep_aspect_ratio": False,
                "jpeg_draft": self.jpeg_draft,
                "library": RESIZE_LIBRARY,
            },
            "scale": {
                "formula": SCALE_FORMULA,
                "divisor": self.scale_divisor,
                "offset": self.scale_offset,
                "range": [-1.0, 1.0],
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        resize = d["resize"]
        scale = d["scale"]
        if resize.get("keep_aspect_ratio", False):
            raise ValueError("keep_aspect_ratio=True is not supported by this server")
        # Fields that name how the numbers above are used: another value would need other code.
        if str(resize.get("library", RESIZE_LIBRARY)) != RESIZE_LIBRARY:
            raise ValueError(f"resize library {resize.get('library')!r} is not supported by this server "
                             f"({RESIZE_LIBRARY})")
        if str(scale.get("formula", SCALE_FORMULA)) != SCALE_FORMULA:
            raise ValueError(f"scale formula {scale.get('formula')!r} is not supported ({SCALE_FORMULA})")
        # What this server's decoder always does; a model trained otherwise is refused at
        # load instead of being fed images it never saw.
        if str(d.get("color_mode", "RGB")) != "RGB":
            raise ValueError(f"color_mode {d.get('color_mode')!r} is not supported by this server (RGB only)")
        if not bool(d.get("exif_transpose", True)):
            raise ValueError("exif_transpose=false is not supported by this server (it applies EXIF orientation)")
        return cls(
            size=(int(resize["size"][0]), int(resize["size"][1])),
            interpolation=str(resize["interpolation"]),
            jpeg_draft=bool(resize.get("jpeg_draft", False)),
            scale_divisor=float(scale["divisor"]),
            scale_offset=float(scale["offset"]),
            color_mode=str(d.get("color_mode", "RGB")),
            exif_transpose=bool(d.get("exif_transpose", True)),
            alpha_background=_rgb(d.get("alpha_background", (255, 255, 255))),
            person_crop=PersonCrop.from_dict(d["person_crop"]) if d.get("person_crop") else None,
            flip_below_margin=float(d.get("flip_below_margin", 0.0)),  # absent: an older model, no flip
        )


OPEN_SET_SCORES = ("max_softmax", "not_outlier", "max_logit", "energy")
#: What this server does, as the metadata names it; a model that says otherwise is refused.
INPUT_LAYOUT = "NHWC"
RESIZE_LIBRARY = "pillow"
SCALE_FORMULA = "x / divisor + offset"
#: Pillow's resampling filters by the names the metadata uses (yogapose.imaging maps them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class OpenSet:
    """The open-set verdict: is this one of the six poses at all?

    ``score`` is computed from the model's logits divided by ``temperature`` (fitted on val
    by minimising the negative log-likelihood, Guo et al. 2017); a photo is accepted when
    the score reaches ``threshold`` (chosen on val so that a stated share of the real
    in-scope photos is accepted). Scores: ``max_softmax`` = the top in-scope probability of
    the softmax over all outputs (Hendrycks & Gimpel 2017), ``not_outlier`` = 1 - the
    outlier output's probability, ``max_logit`` = the top in-scope logit, ``energy`` =
    T * logsumexp of the in-scope logits / T (Liu et al. 2020).

    A photo in which the person detector found nobody is accepted only when, besides, its
    most likely pose has a calibrated probability of at least ``no_person_min_confidence``:
    with no person to look at, a model unsure among the six is not seeing a pose (a plain
    grey or noise image scored 1 - P(other) ~0.86 and was answered "cobra" at 0.14). On val
    it changes nothing (the real photos accepted without a person had >= 0.54).
    """

    method: str  # human-readable name of the whole method, reported by GET /health
    score: str
    temperature: float
    threshold: float
    no_person_min_confidence: float = 0.5  # more likely than not

    def __post_init__(self) -> None:
        if self.score not in OPEN_SET_SCORES:
            raise ValueError(f"unknown open-set score {self.score!r}; one of {OPEN_SET_SCORES}")
        if not self.temperature > 0:
            raise ValueError(f"open-set temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "score": self.score, "temperature": self.temperature,
                "threshold": self.threshold, "no_person_min_confidence": self.no_person_min_confidence}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpenSet:
        return cls(str(d["method"]), str(d["score"]), float(d["temperature"]), float(d["threshold"]),
                   float(d.get("no_person_min_confidence", 0.0)))  # absent: a model from before the rule


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    model_file: str
    sha256: str
    labels: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    preprocessing: Preprocessing
    quantization: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)  # training, validation, versions...
    # "softmax": the model outputs probabilities over ``labels``; "linear": logits, turned
    # into probabilities by the server (with the open-set temperature, if any).
    output_activation: str = "softmax"
    # An extra last output trained on out-of-scope images; never part of the six-key answer.
    outlier_label: str | None = None
    open_set: OpenSet | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model's outputs in order: the labels, then the outlier output if any."""
        return self.labels + ((self.outlier_label,) if self.outlier_label else ())

    @property
    def version(self) -> str:
        """Short model version: the flatbuffer's sha256 prefix (X-Model-Version header)."""
        return self.sha256[:12]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "labels": list(self.labels),
            "input": {"shape": list(self.input_shape), "dtype": self.input_dtype, "layout": INPUT_LAYOUT},
            "output": {"shape": [1, len(self.outputs)], "dtype": "float32", "activation": self.output_activation,
                       "outlier_label": self.outlier_label},
            "preprocessing": self.preprocessing.to_dict(),
            "quantization": self.quantization,
            "open_set": self.open_set.to_dict() if self.open_set else None,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported metadata schema_version {d.get('schema_version')!r}")
        known = {"schema_version", "name", "model_file", "sha256", "labels", "input", "output",
                 "preprocessing", "quantization", "open_set"}
        labels = tuple(str(x) for x in d["labels"])
        if not labels or len(set(labels)) != len(labels):
            raise ValueError("metadata labels must be non-empty and unique")
        output = d.get("output") or {}
        activation = str(output.get("activation", "softmax"))
        if activation not in ("softmax", "linear"):
            raise ValueError(f"unsupported output activation {activation!r}")
        outlier = output.get("outlier_label")
        if outlier is not None and str(outlier) in labels:
            raise ValueError(f"the outlier output {outlier!r} cannot also be a label")
        open_set = OpenSet.from_dict(d["open_set"]) if d.get("open_set") else None
        if open_set is not None and activation != "linear":
            raise ValueError("an open-set verdict needs a model that outputs logits (activation 'linear')")
        preprocessing = Preprocessing.from_dict(d["preprocessing"])
        if str(d["input"].get("layout", INPUT_LAYOUT)) != INPUT_LAYOUT:
            raise ValueError(f"input layout {d['input'].get('layout')!r} is not supported by this server "
                             f"({INPUT_LAYOUT})")
        shape = tuple(int(x) for x in d["input"]["shape"])
        if len(shape) == 4 and preprocessing.size != (shape[2], shape[1]):
            # One size in two places: a mismatch would load and then fail every request.
            raise ValueError(f"resize size {list(preprocessing.size)} (width, height) does not match "
                             f"the input shape {list(shape)} (NHWC)")
        return cls(
            name=str(d["name"]),
            model_file=str(d["model_file"]),
            sha256=str(d["sha256"]),
            labels=labels,
            input_shape=shape,
            input_dtype=str(d["input"]["dtype"]),
            preprocessing=preprocessing,
            quantization=str(d.get("quantization", "float32")),
            extra={k: v for k, v in d.items() if k not in known},
            output_activation=activation,
            outlier_label=str(outlier) if outlier is not None else None,
            open_set=open_set,
        )


def metadata_path_for(model_path: Path | str) -> Path:
    """``model/yoga-pose.tflite`` -> ``model/yoga-pose.json``."""
    return Path(model_path).with_suffix(".json")


def load_metadata(model_path: Path | str) -> ModelMetadata:
    """The metadata beside ``model_path``; ValueError naming the file when a field is missing
    or of the wrong type (callers report ValueError in one line, not a KeyError's traceback)."""
    path = metadata_path_for(model_path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        return ModelMetadata.from_dict(data)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        what = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path} is not valid model metadata ({what})") from None


def write_metadata(meta: ModelMetadata, model_path: Path | str) -> Path:
    path = metadata_path_for(model_path)
    path.write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rgb(value: Any) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in value)
    return (r, g, b)
