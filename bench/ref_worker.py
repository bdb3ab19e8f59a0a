"""Bench worker for the REFERENCE stack: what the original project served with.

Runs in ``bench/.ref-venv`` (Python 3.11, tflite-runtime 2.14, keras-image-helper 0.0.1,
numpy < 2); imports nothing from this project except the stdlib-only ``wcommon``.

    bench/.ref-venv/bin/python bench/ref_worker.py '<json config>'

The serving code mirrors the original ``lambda_function.py``: a module-level
``tflite.Interpreter`` + ``create_preprocessor('xception', target_size=(150, 150))``, and a
predict function that opens the bytes with PIL exactly like ``from_url`` does after its
download (``Image.open(BytesIO(buffer))`` -> ``convert_to_tensor``). No warm-up at init:
the original had none. Modes: ``cold``, ``warm``, ``variants`` (can this runtime load each
flatbuffer, and how fast is inference alone), ``fetch`` (``from_url``'s download step).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:  # mypy checks bench/ as a package
    from typing import Any

    import numpy as np

    from bench import wcommon
else:  # run as a script: bench/ is on sys.path (above)
    import wcommon


class ReferenceStack:
    """The original serving code, with the model path / labels / threads as parameters."""

    def __init__(self, model_path: str, labels: list[str], threads: int) -> None:
        import tflite_runtime.interpreter as tflite
        from keras_image_helper import create_preprocessor

        self.preprocessor = create_preprocessor("xception", target_size=(150, 150))
        self.interpreter = tflite.Interpreter(model_path=model_path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.classes = list(labels)

    def predict_bytes(self, data: bytes) -> dict:
        from io import BytesIO

        from PIL import Image

        img = Image.open(BytesIO(data))  # what keras_image_helper.download_image does
        x = self.preprocessor.convert_to_tensor(img)
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        preds = self.interpreter.get_tensor(self.output_index)
        return dict(zip(self.classes, preds[0].tolist(), strict=True))

    def handler_b64(self, event: dict) -> dict:
        """The same, for a direct ``{"image": <b64>}`` event (the original took URLs only)."""
        return self.predict_bytes(base64.b64decode(event["image"]))


def _labels(model_path: str) -> list[str]:
    """One name per model output: the labels, plus the outlier output's name when the model
    has one (an open-set model's extra output, which the original code would list too)."""
    meta = os.path.splitext(model_path)[0] + ".json"
    with open(meta, encoding="utf-8") as f:
        data = json.load(f)
    extra = (data.get("output") or {}).get("outlier_label")
    return data["labels"] + ([extra] if extra else [])


def infer_only(model_path: str, threads: int, runs: int, budget: float, x: np.ndarray | None = None) -> dict:
    import numpy as np
    import tflite_runtime.interpreter as tflite

    try:
        it = tflite.Interpreter(model_path=model_path, num_threads=threads)
        it.allocate_tensors()
    except Exception as exc:  # noqa: BLE001 - the message is the finding
        return {"loads": False, "error": str(exc).strip().splitlines()[0][:300]}
    d = it.get_input_details()[0]
    if x is None:
        x = np.zeros(d["shape"], np.float32)
    if d["dtype"] != np.float32:
        scale, zero = d["quantization"]
        x = np.clip(np.round(x / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    try:
        times = wcommon.timeit(it.invoke, runs, budget, warmup=2)
    except Exception as exc:  # noqa: BLE001
        return {"loads": True, "runs": False, "error": str(exc).strip().splitlines()[0][:300]}
    return {"loads": True, "runs": True, "infer": wcommon.summarize(times)}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    mode = cfg["mode"]
    threads = int(cfg.get("threads", 1))

    if mode == "variants":
        out: dict[str, Any] = {p: infer_only(p, threads, cfg["infer_runs"], cfg["budget_s"]) for p in cfg["models"]}
        wcommon.emit(out)
        return 0

    if mode == "initparts":
        watch = wcommon.Stopwatch()
        wcommon.time_imports(watch, [
            ("numpy", ["numpy"]),
            ("Pillow", ["PIL.Image"]),
            ("tflite_runtime", ["tflite_runtime.interpreter"]),
            ("keras_image_helper", ["keras_image_helper"]),
        ])
        import numpy as np  # loaded above: these two lines cost nothing
        import tflite_runtime.interpreter as tflite
        it = tflite.Interpreter(model_path=cfg["model"], num_threads=threads)
        wcommon.time_interpreter_init(it, np.zeros, watch, "first invoke (in the first request)")
        wcommon.emit({"parts": watch.marks})
        return 0

    if mode == "fetch":
        from keras_image_helper.base import download_image

        res = {}
        for url in cfg["urls"]:
            res[url] = wcommon.summarize(wcommon.timeit(lambda u=url: download_image(u), cfg["runs"], cfg["budget_s"]))
        wcommon.emit(res)
        return 0

    images = wcommon.read_images(cfg["images"])
    events = {n: {"image": base64.b64encode(b).decode("ascii")} for n, b in images.items()}
    model_path = cfg["model"]
    labels = _labels(model_path)

    t0 = time.perf_counter()
    stack = ReferenceStack(model_path, labels, threads)
    t_import = time.perf_counter() - t0

    if mode == "cold":
        return wcommon.emit_cold("reference", t_import, stack.handler_b64, events[os.path.basename(cfg["images"][0])])

    runs, budget = cfg["runs"], cfg["budget_s"]
    out = {"kind": "reference", "import_s": t_import,
           "images": wcommon.warm_images(images, events, stack.handler_b64, stack.predict_bytes, runs, budget)}
    out["rss"] = wcommon.peak_rss_mb()
    from io import BytesIO

    import numpy as np
    from PIL import Image

    pre = stack.preprocessor
    st_runs = max(3, min(10, cfg["infer_runs"] // 4))
    out["stages"] = {}
    for name, data in images.items():
        text = events[name]["image"]
        small = pre.resize_image(Image.open(BytesIO(data)))
        out["stages"][name] = {
            "base64": wcommon.summarize(wcommon.timeit(lambda t=text: base64.b64decode(t), st_runs, 1.0, min_runs=3)),
            "decode_resize": wcommon.summarize(wcommon.timeit(
                lambda d=data: pre.resize_image(Image.open(BytesIO(d))), st_runs, 1.0, min_runs=3)),
            "to_tensor": wcommon.summarize(wcommon.timeit(
                lambda i=small: pre.preprocess(np.expand_dims(pre.image_to_array(i), axis=0)), st_runs, 1.0,
                min_runs=3)),
        }

    x = stack.preprocessor.convert_to_tensor(Image.open(BytesIO(next(iter(images.values())))))
    stack.interpreter.set_tensor(stack.input_index, x)
    out["infer"] = wcommon.summarize(wcommon.timeit(stack.interpreter.invoke, cfg["infer_runs"], budget, warmup=2))
    wcommon.emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
