"""A tiny TFLite model with the production signature, built on the fly for tests.

(1, 150, 150, 3) float32 in [-1, 1] -> (1, 6) float32 softmax, plus the metadata JSON the
server reads. The output depends on the image (mean colour per region), so tests can tell
different images apart, but it knows nothing about yoga.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from yogapose.metadata import ModelMetadata, Preprocessing, sha256_file, write_metadata

LABELS = ("chair", "cobra", "downdog", "goddess", "tree", "warrior")
TINY_NAME = "tiny-test.tflite"


def build_keras_tiny(seed: int = 0, size: int = 150, n_classes: int = 6):
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


def make_tiny_model(out_dir: Path | str, labels: tuple[str, ...] = LABELS) -> Path:
    """Write ``tiny-test.tflite`` and ``tiny-test.json`` to ``out_dir``; return the .tflite path."""
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_keras_tiny(n_classes=len(labels))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = out_dir / TINY_NAME
    path.write_bytes(converter.convert())
    meta = ModelMetadata(
        name="tiny-test",
        model_file=path.name,
        sha256=sha256_file(path),
        labels=tuple(labels),
        input_shape=(1, 150, 150, 3),
        input_dtype="float32",
        preprocessing=Preprocessing(),
        quantization="float32",
        extra={"note": "test model, random weights"},
    )
    write_metadata(meta, path)
    return path


if __name__ == "__main__":  # python -m tests.tinymodel /tmp/tiny-model
    import sys

    print(make_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "build/tiny-model"))
    _ = np
