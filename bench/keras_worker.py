"""Bench worker for plain Keras/TensorFlow: what a user might serve with instead of TFLite.

Runs with a Python that has TensorFlow (the project venv after ``.ci/setup --dev``):

    .venv/bin/python bench/keras_worker.py '<json config>'

Serving path: ``keras.utils.load_img`` on the bytes (Pillow, resized with the model's
interpolation) -> ``img_to_array`` -> Xception ``preprocess_input`` -> ``model(x)``.
Threads: TensorFlow intra-op pool = ``threads``, inter-op pool = 1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:  # mypy checks bench/ as a package
    from bench import wcommon
else:  # run as a script: bench/ is on sys.path (above)
    import wcommon


def main() -> int:
    cfg = json.loads(sys.argv[1])
    threads = int(cfg.get("threads", 1))
    images = wcommon.read_images(cfg["images"])
    events = {n: {"image": base64.b64encode(b).decode("ascii")} for n, b in images.items()}
    interpolation = cfg.get("interpolation", "bilinear")

    t0 = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras.applications.xception import preprocess_input

    model = keras.models.load_model(cfg["keras_model"], compile=False)
    labels = cfg["labels"]
    size = tuple(cfg.get("size", (150, 150)))
    t_import = time.perf_counter() - t0

    def predict_bytes(data: bytes) -> dict:
        img = keras.utils.load_img(io.BytesIO(data), target_size=(size[1], size[0]),
                                   interpolation=interpolation)
        x = preprocess_input(keras.utils.img_to_array(img)[None])
        probs = np.asarray(model(x, training=False))[0]
        return dict(zip(labels, probs.tolist(), strict=True))

    def handler_b64(event: dict) -> dict:
        return predict_bytes(base64.b64decode(event["image"]))

    if cfg["mode"] == "cold":
        return wcommon.emit_cold("keras", t_import, handler_b64, events[os.path.basename(cfg["images"][0])])

    runs, budget = cfg["runs"], cfg["budget_s"]
    out = {"kind": "keras", "import_s": t_import,
           "images": wcommon.warm_images(images, events, handler_b64, predict_bytes, runs, budget)}
    out["rss"] = wcommon.peak_rss_mb()
    img = keras.utils.load_img(io.BytesIO(next(iter(images.values()))), target_size=(size[1], size[0]))
    x = tf.constant(preprocess_input(keras.utils.img_to_array(img)[None]))
    out["infer"] = wcommon.summarize(
        wcommon.timeit(lambda: model(x, training=False), cfg["infer_runs"], budget, warmup=2))
    wcommon.emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
