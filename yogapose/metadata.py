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

    def to_dict(self) -> dict[str, Any]:
        return {
            "color_mode": self.color_mode,
            "exif_transpose": self.exif_transpose,
            "alpha_background": list(self.alpha_background),
            "resize": {
                "size": list(self.size),
                "interpolation": self.interpolation,
                "keep_aspect_ratio": False,
                "jpeg_draft": self.jpeg_draft,
                "library": "pillow",
            },
            "scale": {
                "formula": "x / divisor + offset",
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
        return cls(
            size=(int(resize["size"][0]), int(resize["size"][1])),
            interpolation=str(resize["interpolation"]),
            jpeg_draft=bool(resize.get("jpeg_draft", False)),
            scale_divisor=float(scale["divisor"]),
            scale_offset=float(scale["offset"]),
            color_mode=str(d.get("color_mode", "RGB")),
            exif_transpose=bool(d.get("exif_transpose", True)),
            alpha_background=tuple(d.get("alpha_background", (255, 255, 255))),  # type: ignore[arg-type]
        )


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
            "input": {"shape": list(self.input_shape), "dtype": self.input_dtype, "layout": "NHWC"},
            "output": {"shape": [1, len(self.labels)], "dtype": "float32", "activation": "softmax"},
            "preprocessing": self.preprocessing.to_dict(),
            "quantization": self.quantization,
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMetadata:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported metadata schema_version {d.get('schema_version')!r}")
        known = {"schema_version", "name", "model_file", "sha256", "labels", "input", "output",
                 "preprocessing", "quantization"}
        labels = tuple(str(x) for x in d["labels"])
        if not labels or len(set(labels)) != len(labels):
            raise ValueError("metadata labels must be non-empty and unique")
        return cls(
            name=str(d["name"]),
            model_file=str(d["model_file"]),
            sha256=str(d["sha256"]),
            labels=labels,
            input_shape=tuple(int(x) for x in d["input"]["shape"]),
            input_dtype=str(d["input"]["dtype"]),
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            quantization=str(d.get("quantization", "float32")),
            extra={k: v for k, v in d.items() if k not in known},
        )


def metadata_path_for(model_path: Path | str) -> Path:
    """``model/yoga-pose.tflite`` -> ``model/yoga-pose.json``."""
    return Path(model_path).with_suffix(".json")


def load_metadata(model_path: Path | str) -> ModelMetadata:
    with open(metadata_path_for(model_path), encoding="utf-8") as f:
        return ModelMetadata.from_dict(json.load(f))


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
