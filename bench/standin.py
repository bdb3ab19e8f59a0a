"""Build Xception-sized stand-in models so the bench can be developed before training ends.

Same architecture as ``convert/train.py`` (Xception base 150x150 -> GAP -> Dense(500) ->
Dropout -> Dense(6, softmax)) with random weights, converted to the four variants the real
conversion produces. Outputs go to ``build/bench-dev/`` (gitignored); needs TensorFlow, so run
it with the training venv::

    /work/venv-train/bin/python -m bench.standin [--out build/bench-dev]

The timings of a random-weight network equal those of the trained one (same ops, same
shapes); only the predictions are meaningless.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from bench.images import val_photos
from yogapose.imaging import preprocess_bytes
from yogapose.metadata import ModelMetadata, Preprocessing, sha256_file, write_metadata

LABELS = ("chair", "cobra", "downdog", "goddess", "tree", "warrior")
VARIANTS = ("float32", "float16", "dynamic_int8", "full_int8")


def build_keras(seed: int = 0):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(150, 150, 3))
    inp = keras.Input((150, 150, 3), name="image")
    x = base(inp, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(500, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(len(LABELS), activation="softmax")(x)
    return keras.Model(inp, out)


def _representative(n: int = 16):
    prep = Preprocessing()
    photos = val_photos(n)

    def gen():
        for p in photos:
            yield [preprocess_bytes(p.read_bytes(), prep, 40_000_000)]

    return gen


def convert(model, variant: str) -> bytes:
    """The project's own converter (``convert.convert``), so stand-ins match shipped variants."""
    from convert.convert import convert_keras

    return convert_keras(model, variant, _representative() if variant == "full_int8" else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/bench-dev"))
    args = ap.parse_args(argv)
    out: Path = args.out
    (out / "variants").mkdir(parents=True, exist_ok=True)
    model = build_keras()
    model.save(out / "yoga-xception.keras")
    for variant in VARIANTS:
        path = out / "variants" / f"yoga-pose-{variant}.tflite"
        path.write_bytes(convert(model, variant))
        meta = ModelMetadata(
            name=f"yoga-pose-standin-{variant}",
            model_file=path.name,
            sha256=sha256_file(path),
            labels=LABELS,
            input_shape=(1, 150, 150, 3),
            input_dtype="float32",
            preprocessing=Preprocessing(),
            quantization=variant,
            extra={"note": "bench stand-in: Xception architecture, random weights"},
        )
        write_metadata(meta, path)
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB", flush=True)
    _ = np
    return 0


if __name__ == "__main__":
    sys.exit(main())
