"""Convert a Keras model to a TFLite flatbuffer, verify it, and write its metadata.

Variants:
  float32       plain conversion
  float16       weights stored as float16 (half the size, float compute)
  dynamic_int8  dynamic-range quantization: int8 weights, activations quantized on the fly
  full_int8     full-integer quantization calibrated on representative training images
                (float32 input/output tensors kept, so callers feed the same array)

After converting, the flatbuffer is run through the serving runtime on validation images
and compared with the Keras model; a variant whose top-1 agreement or probability
difference is beyond the thresholds is refused (nothing written).

Usage::

    python -m convert.convert build/yoga-xception.keras --variant float16 \
        --output model/yoga-pose.tflite --data ../shared/data/yoga
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yogapose.metadata import ModelMetadata, Preprocessing, sha256_file, write_metadata

from .data import OUTLIER_LABEL, class_names_of, file_sha256, list_images, negative_items, scale, to_uint8
from .openset import softmax

if TYPE_CHECKING:
    import keras

VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")
# Largest acceptable |p_tflite - p_keras| per variant: quantized variants legitimately move
# probabilities; the top-1 agreement threshold is what guards correctness.
DEFAULT_MAX_DIFF = {"float32": 1e-3, "float16": 0.05, "dynamic_int8": 0.5, "full_int8": 0.6}
# Top-1 agreement with Keras is required on the val images whose Keras answer is clear (its
# top probability leads the runner-up by at least CLEAR_MARGIN): a conversion that changes a
# clear answer is broken. Near-ties flip under any rounding (the 15 disagreements of a
# dynamic-int8 run that met every accuracy figure of float32 all had margins <= 0.37), so
# over all images a looser floor applies.
DEFAULT_MIN_AGREEMENT = 0.99
CLEAR_MARGIN = 0.5
DEFAULT_MIN_OVERALL_AGREEMENT = 0.98


class VerificationError(RuntimeError):
    """The converted flatbuffer disagrees with the Keras model beyond the thresholds.

    Carries the data: ``variant``, ``result`` (the :class:`Verification`), the thresholds, and
    ``kept`` (where the refused flatbuffer was kept for reporting, or None).
    """

    def __init__(self, variant: str, result: Verification, min_agreement: float, max_diff: float,
                 kept: Path | None, min_overall: float) -> None:
        self.variant, self.result, self.kept = variant, result, kept
        self.min_agreement, self.max_diff, self.min_overall = min_agreement, max_diff, min_overall
        super().__init__(f"{variant}: {self.reason}; not written")

    @property
    def reason(self) -> str:
        r = self.result
        return (f"top-1 agreement {r.clear_agreement:.4f} on {r.clear_images} clear answers (min "
                f"{self.min_agreement}), {r.top1_agreement:.4f} on all (min {self.min_overall}), max abs prob "
                f"diff {r.max_abs_diff:.4g} (max {self.max_diff}) on {r.images} images")


@dataclass
class Verification:
    images: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    clear_images: int = 0  # Keras's top probability leads by >= CLEAR_MARGIN
    clear_agreement: float = 1.0

    def passes(self, min_agreement: float, max_diff: float,
               min_overall: float = DEFAULT_MIN_OVERALL_AGREEMENT) -> bool:
        return (self.clear_agreement >= min_agreement and self.top1_agreement >= min_overall
                and self.max_abs_diff <= max_diff)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "top1_agreement": round(self.top1_agreement, 6),
            "clear_images": self.clear_images,
            "clear_top1_agreement": round(self.clear_agreement, 6),
            "max_abs_prob_diff": float(f"{self.max_abs_diff:.6g}"),
            "mean_abs_prob_diff": float(f"{self.mean_abs_diff:.6g}"),
        }


def convert_keras(model: keras.Model, variant: str,
                  representative: Callable[[], Iterable[list[np.ndarray]]] | None = None) -> bytes:
    """Keras model -> flatbuffer bytes for one of :data:`VARIANTS`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "full_int8":
        if representative is None:
            raise ValueError("full_int8 needs representative images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def representative_from(images: np.ndarray, prep: Preprocessing) -> Callable[[], Iterable[list[np.ndarray]]]:
    """Calibration generator over uint8 training images (scaled exactly as served)."""

    def gen():
        for img in images:
            yield [scale(img[None], prep)]

    return gen


def sample_train_images(train_dir: Path, class_names: list[str], prep: Preprocessing, n: int, seed: int) -> np.ndarray:
    """A class-stratified random sample of training images for calibration."""
    items = list_images(train_dir, class_names)
    rng = np.random.default_rng(seed)
    picks: list[Path] = []
    per_class = max(1, n // len(class_names))
    for c in range(len(class_names)):
        files = [p for p, label in items if label == c]
        rng.shuffle(files)
        picks.extend(files[:per_class])
    if not picks:
        return np.empty((0, *prep.size[::-1], 3), np.uint8)
    return np.stack([to_uint8(p, prep) for p in picks])


def tflite_predict(model_path: Path, inputs: np.ndarray, num_threads: int = 2) -> np.ndarray:
    """Probabilities from the serving runtime for a stack of (H, W, 3) float inputs."""
    from yogapose.runtime import Model

    model = Model.load(model_path, num_threads=num_threads)
    return np.concatenate([np.asarray(model.predict(x[None]), dtype=np.float32).reshape(1, -1) for x in inputs])


def verify(keras_probs: np.ndarray, tflite_probs: np.ndarray, logits: bool = False) -> Verification:
    """Top-1 agreement and probability differences (logits are compared as softmax)."""
    if logits:
        keras_probs, tflite_probs = softmax(keras_probs), softmax(tflite_probs)
    same = keras_probs.argmax(1) == tflite_probs.argmax(1)
    top2 = np.sort(keras_probs, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= CLEAR_MARGIN
    diff = np.abs(keras_probs - tflite_probs)
    return Verification(len(keras_probs), float(same.mean()), float(diff.max()), float(diff.mean()),
                        int(clear.sum()), float(same[clear].mean()) if clear.any() else 1.0)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy", "pillow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def build_metadata(
    model_path: Path,
    class_names: list[str],
    prep: Preprocessing,
    variant: str,
    verification: Verification,
    extra: dict | None = None,
) -> ModelMetadata:
    size = prep.size
    # A model trained with out-of-scope images has the outlier output last and emits logits.
    outlier = OUTLIER_LABEL if class_names and class_names[-1] == OUTLIER_LABEL else None
    return ModelMetadata(
        name="yoga-pose-xception",
        model_file=model_path.name,
        sha256=sha256_file(model_path),
        labels=tuple(class_names[:-1] if outlier else class_names),
        input_shape=(1, size[1], size[0], 3),
        input_dtype="float32",
        preprocessing=prep,
        quantization=variant,
        extra={"verification": verification.to_dict(), "versions": library_versions(), **(extra or {})},
        output_activation="linear" if outlier else "softmax",
        outlier_label=outlier,
    )


def convert_and_verify(
    keras_model: keras.Model,
    variant: str,
    output: Path,
    class_names: list[str],
    prep: Preprocessing,
    val_inputs: np.ndarray,
    keras_probs: np.ndarray,
    representative: Callable | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_diff: float | None = None,
    extra: dict | None = None,
    rejected_dir: Path | None = None,
) -> ModelMetadata:
    """Convert, verify against Keras on ``val_inputs`` and only then write model + metadata.

    Raises :class:`VerificationError` when the flatbuffer disagrees; nothing is written to
    ``output``. With ``rejected_dir`` the refused flatbuffer is kept there, clearly apart,
    so a report can still measure it.
    """
    flatbuffer = convert_keras(keras_model, variant, representative)
    max_diff = DEFAULT_MAX_DIFF[variant] if max_diff is None else max_diff
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        candidate = Path(tmp) / output.name
        candidate.write_bytes(flatbuffer)
        # Metadata first (the runtime reads it and checks the sha256), then verify.
        provisional = build_metadata(candidate, class_names, prep, variant, Verification(0, 0.0, 0.0, 0.0), extra)
        write_metadata(provisional, candidate)
        tfl_probs = tflite_predict(candidate, val_inputs)
        result = verify(keras_probs, tfl_probs, logits=bool(class_names) and class_names[-1] == OUTLIER_LABEL)
        # A caller's looser min_agreement (a tiny test model) loosens the overall floor too.
        min_overall = min(DEFAULT_MIN_OVERALL_AGREEMENT, min_agreement)
        if not result.passes(min_agreement, max_diff, min_overall):
            kept = None
            if rejected_dir is not None:
                rejected_dir.mkdir(parents=True, exist_ok=True)
                kept = rejected_dir / output.name
                os.replace(candidate, kept)
                write_metadata(build_metadata(kept, class_names, prep, variant, result, extra), kept)
            raise VerificationError(variant, result, min_agreement, max_diff, kept, min_overall)
        os.replace(candidate, output)
    meta = build_metadata(output, class_names, prep, variant, result, extra)
    write_metadata(meta, output)
    return meta


def load_keras(path: Path) -> keras.Model:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras.models.load_model(path, compile=False)


def load_val_inputs(val_dir: Path, class_names: list[str], prep: Preprocessing, limit: int | None = None,
                    negatives: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Val inputs through the serving preprocessing (+ the out-of-scope val images, if given)."""
    items = list_images(val_dir, class_names)
    if negatives is not None and class_names and class_names[-1] == OUTLIER_LABEL:
        items += negative_items(negatives, len(class_names) - 1)
    if limit:
        items = items[:limit]
    images = np.stack([to_uint8(p, prep) for p, _ in items])
    return scale(images, prep), np.array([c for _, c in items])


def training_info(info: dict) -> dict:
    """The metadata's ``training`` section from a training run's info (``convert.train.train``)."""
    if not info:
        return {}
    return {
        "training": {
            "recipe": info.get("recipe"),
            "manifest_sha256": info.get("manifest_sha256"),
            "train_images": info.get("train_images"),
            "val_images": info.get("val_images"),
            "seconds": info.get("seconds"),
            "keras_final_val": info.get("final_val"),
            "person_found": info.get("person_found"),
            "negatives_manifest_sha256": info.get("negatives_manifest_sha256"),
        }
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a Keras model to TFLite, verify it, write metadata.")
    p.add_argument("keras_model", type=Path, help=".keras or .h5 file")
    p.add_argument("--variant", choices=VARIANTS, default="float32")
    p.add_argument("--output", type=Path, required=True, help="output .tflite path (metadata .json goes beside it)")
    p.add_argument("--data", type=Path, default=Path("../shared/data/yoga"), help="dir with train/ and val/")
    p.add_argument("--labels", help="comma-separated labels in output order (default: class folders of train/)")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--verify-limit", type=int, default=None, help="verify on the first N val images only")
    p.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT)
    p.add_argument("--max-diff", type=float, default=None)
    p.add_argument("--input-size", type=int, default=150)
    p.add_argument("--interpolation", default="bilinear")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    prep = Preprocessing(size=(args.input_size, args.input_size), interpolation=args.interpolation)
    class_names = args.labels.split(",") if args.labels else class_names_of(args.data / "train")
    model = load_keras(args.keras_model)
    val_x, _ = load_val_inputs(args.data / "val", class_names, prep, args.verify_limit)
    keras_probs = np.asarray(model.predict(val_x, batch_size=64, verbose=0))
    rep = None
    if args.variant == "full_int8":
        sample = sample_train_images(args.data / "train", class_names, prep, args.calibration_images, args.seed)
        rep = representative_from(sample, prep)
    train_json = Path(args.keras_model).with_suffix(".train.json")
    extra = training_info(json.loads(train_json.read_text()) if train_json.is_file() else {})
    extra["training"] = {**extra.get("training", {}), "manifest_sha256": file_sha256(args.data / "manifest.csv")}
    try:
        meta = convert_and_verify(model, args.variant, args.output, class_names, prep, val_x, keras_probs, rep,
                                  args.min_agreement, args.max_diff, extra)
    except VerificationError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"output": str(args.output), "sha256": meta.sha256, **meta.extra["verification"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
