"""The tiny test models: committed under ``tests/fixtures/tiny-model/``, made by this script.

Two kilobyte-sized TFLite models with the production signature, (1, 150, 150, 3) float32
in [-1, 1] -> (1, 6) softmax, each with the metadata JSON the server reads:

* ``tiny-test.tflite``: float32, what every serving test runs on;
* ``tiny-int8.tflite``: the same Keras weights converted full-integer (int8 input and
  output tensors), for the runtime's quantized path.

The output depends on the image (mean colour per 30x30 region), so tests can tell
different images apart, but the models know nothing about yoga.

Serving tests only copy the committed files, so they run without TensorFlow. Regenerate
them (TensorFlow from the ``[train]`` group) after the metadata format changes, so the
committed JSON stays exactly what :func:`yogapose.metadata.write_metadata` writes::

    .venv/bin/python -m tests.tinymodel            # rewrites tests/fixtures/tiny-model/
    .venv/bin/python -m tests.tinymodel /tmp/out   # or somewhere else

``tests/training/test_tiny_model.py`` checks that regenerating gives the same signature.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from yogapose.metadata import ModelMetadata, Preprocessing, sha256_file, write_metadata

LABELS = ("chair", "cobra", "downdog", "goddess", "tree", "warrior")
TINY_NAME = "tiny-test.tflite"
INT8_NAME = "tiny-int8.tflite"
TINY_DIR = Path(__file__).resolve().parent / "fixtures" / "tiny-model"


# ------------------------------------------------------------------ using the committed files


def make_tiny_model(out_dir: Path | str, name: str = TINY_NAME) -> Path:
    """Copy the committed model ``name`` and its metadata to ``out_dir``; the .tflite path.

    A copy, so tests may edit or corrupt it without touching the committed fixture.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = TINY_DIR / name
    dst = out_dir / name
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    """A random input made of 30x30 blocks (what the tiny model's 30x30 pooling sees)."""
    coarse = rng.uniform(-1, 1, (1, 5, 5, 3))
    return np.repeat(np.repeat(coarse, 30, axis=1), 30, axis=2).astype(np.float32)


# ------------------------------------------------------------------ making them (TensorFlow)


def build_keras_tiny(seed: int = 0, size: int = 150, n_classes: int = 6) -> Any:
    """A small Keras model with the production input/output shapes."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = layers.AveragePooling2D(pool_size=30)(inp)  # 5x5x3 colour layout
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu")(x)
    out = layers.Dense(n_classes, activation="softmax")(x)
    model = keras.Model(inp, out)
    # Larger weights make the output depend visibly on the image.
    model.set_weights([w * 4.0 for w in model.get_weights()])
    return model


def generate(out_dir: Path | str = TINY_DIR) -> list[Path]:
    """Write both tiny models and their metadata to ``out_dir``; the .tflite paths."""
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras_model = build_keras_tiny(n_classes=len(LABELS))

    def representative() -> Iterator[list[np.ndarray]]:
        rng = np.random.default_rng(0)
        for _ in range(32):
            yield [smooth_image(rng)]

    paths = []
    for name, quantization in ((TINY_NAME, "float32"), (INT8_NAME, "full_int8")):
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        if quantization == "full_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        path = out_dir / name
        path.write_bytes(converter.convert())
        # The metadata describes the float array callers pass; the runtime quantizes it.
        write_metadata(ModelMetadata(
            name=path.stem,
            model_file=path.name,
            sha256=sha256_file(path),
            labels=LABELS,
            input_shape=(1, 150, 150, 3),
            input_dtype="float32",
            # One pass per image: serving tests pin the tiny model's outputs.
            preprocessing=Preprocessing(flip_below_margin=0.0),
            quantization=quantization,
            extra={"note": "test model, random weights; made by `python -m tests.tinymodel`"},
        ), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    import sys

    for made in generate(sys.argv[1] if len(sys.argv) > 1 else TINY_DIR):
        print(f"{made} ({made.stat().st_size} bytes)")
