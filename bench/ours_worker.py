"""Bench worker for this project's serving stack (runs in the project venv, Python 3.12).

    python bench/ours_worker.py '<json config>'

The model and thread count come from the environment, exactly as in Lambda
(MODEL_PATH, NUM_THREADS). Modes:

* ``cold``: import ``lambda_function`` (model load + warm-up happen at import) and answer
  one direct ``{"image": <b64>}`` event; the orchestrator times spawn -> answer line.
* ``warm``: import once, then time the handler on every image (direct event, base64
  included) and the app-level bytes function (no base64), record peak RSS, then time
  inference alone on a separate interpreter with the same model and threads.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)  # Lambda's task root: where lambda_function.py lives

import wcommon

from localtools.context import LambdaContext

KIND = "lambda_function"


def import_handler(task_root: str = REPO):
    """Import ``lambda_function`` (model load + warm-up happen here, as in a cold start).

    ``task_root`` may point at a copy of the deployable code (lambda_function.py +
    yogapose/) to import it from there, e.g. without its ``__pycache__``.
    """
    if task_root != REPO:
        sys.path.insert(0, task_root)
    import lambda_function

    return lambda_function


def infer_only(model_path: str, threads: int, x, runs: int, budget: float) -> list:
    """Time interpreter.invoke() alone (input already set), same library as the handler."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model_path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    if d["dtype"] != np.float32:
        scale, zero = d["quantization"]
        x = np.clip(np.round(x / scale + zero), np.iinfo(d["dtype"]).min, np.iinfo(d["dtype"]).max)
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    return wcommon.timeit(it.invoke, runs, budget, warmup=2)


def fetch_mode(cfg) -> int:
    """Time ``yogapose.fetch.fetch`` (the guarded downloader) against loopback URLs."""
    from yogapose.config import load_settings
    from yogapose.fetch import FetchLimits, fetch

    # The server is on 127.0.0.1; the limits are what the app passes.
    limits = FetchLimits.from_settings(load_settings({"ALLOW_PRIVATE_URLS": "true"}))
    res = {}
    for url in cfg["urls"]:
        res[url] = wcommon.summarize(
            wcommon.timeit(lambda u=url: fetch(u, limits).data, cfg["runs"], cfg["budget_s"]))
    wcommon.emit(res)
    return 0


def _draft_decode(data: bytes, size) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", tuple(size))
        im.load()


def stages(images: dict, events: dict, settings, prep, cfg: dict) -> dict:
    """Per-stage medians of the request path, per image, through the app's own
    ``Preprocessor``: base64, decode (EXIF, alpha, draft), person crop + resize, tensor."""
    from yogapose.b64 import decode_payload
    from yogapose.preprocess import Preprocessor

    pre = Preprocessor.for_model(prep, os.path.dirname(settings.model_path), settings.num_threads)

    def b64(text: str) -> bytes:
        return decode_payload(text, "image", settings.max_bytes)

    runs = max(3, min(10, cfg["infer_runs"] // 4))
    res = {}
    for name, data in images.items():
        text = events[name]["image"]
        decoded = pre.decode(data, settings.max_pixels)
        framed = pre.frame(decoded)
        res[name] = {
            "base64": wcommon.summarize(wcommon.timeit(lambda t=text: b64(t), runs, 1.0, min_runs=3)),
            "decode": wcommon.summarize(wcommon.timeit(
                lambda d=data: pre.decode(d, settings.max_pixels), runs, 1.0, min_runs=3)),
            "frame": wcommon.summarize(wcommon.timeit(lambda i=decoded: pre.frame(i), runs, 1.0, min_runs=3)),
            "to_tensor": wcommon.summarize(wcommon.timeit(lambda f=framed: pre.to_input(f), runs, 1.0, min_runs=3)),
        }
        if data[:3] == b"\xff\xd8\xff":
            # libjpeg-turbo alone at the draft scale the decode uses: the entropy decode of
            # every coefficient is the part no resize or copy trick can avoid.
            res[name]["jpeg_draft_decode"] = wcommon.summarize(wcommon.timeit(
                lambda d=data: _draft_decode(d, pre.draft_size), runs, 1.0, min_runs=3))
    return res


OVERLAPPED_PREFIX = "(overlapped) "


def init_parts(cfg) -> int:
    """Cold-start anatomy in a fresh process: each import and init step timed on its own.

    Mirrors what importing lambda_function does (the app's own code in "yogapose rest"),
    without calling it, so the steps can be told apart.
    """
    watch = wcommon.Stopwatch()
    wcommon.time_imports(watch, [
        ("numpy", ["numpy"]),
        ("Pillow", ["PIL.Image"]),
        ("ai_edge_litert", ["ai_edge_litert.interpreter"]),
        ("aws_lambda_powertools", ["aws_lambda_powertools.logging", "aws_lambda_powertools.metrics"]),
        ("yogapose (+ what it imports at init)", ["yogapose.app"]),
    ])
    import numpy as np  # loaded above: these two lines cost nothing
    from ai_edge_litert.interpreter import Interpreter
    # Whether the HTTP/TLS stack is part of init (it is only needed for URL requests).
    watch.marks.append(["(ssl imported at init: 1 = yes)", float("ssl" in sys.modules)])
    from yogapose.metadata import sha256_file

    path = os.environ["MODEL_PATH"]
    sha256_file(path)
    # Model.load runs the digest on a second thread during the next steps: timed alone here,
    # left out of the sum (the cold-start rows measure the real overlap).
    watch.mark(OVERLAPPED_PREFIX + "sha256 of the model, alone (Model.load overlaps it with the steps below)")
    threads = int(os.environ.get("NUM_THREADS", "1"))
    it = Interpreter(model_path=path, num_threads=threads)
    wcommon.time_interpreter_init(it, np.zeros, watch, "first invoke (warm-up)")
    from yogapose.metadata import load_metadata

    prep = load_metadata(path).preprocessing
    if prep.person_crop is not None:  # the app loads the detector at init too
        from yogapose.preprocess import Preprocessor

        Preprocessor.for_model(prep, os.path.dirname(path), threads)
        watch.mark("person detector load")
    wcommon.emit({"parts": watch.marks})
    return 0


def main() -> int:
    cfg = json.loads(sys.argv[1])
    if cfg["mode"] == "fetch":
        return fetch_mode(cfg)
    if cfg["mode"] == "initparts":
        return init_parts(cfg)
    images = wcommon.read_images(cfg["images"])
    events = {n: {"image": base64.b64encode(b).decode("ascii")} for n, b in images.items()}
    ctx = LambdaContext("00000000-0000-0000-0000-000000000000", function_name="yoga-pose-bench",
                        memory_limit_in_mb=1769)

    t0 = time.perf_counter()
    mod = import_handler(cfg.get("task_root") or REPO)
    t_import = time.perf_counter() - t0

    def handler_b64(event):
        return mod.lambda_handler(event, ctx)

    if cfg["mode"] == "cold":
        return wcommon.emit_cold(KIND, t_import, handler_b64, events[os.path.basename(cfg["images"][0])])

    runs, budget = cfg["runs"], cfg["budget_s"]
    from yogapose.app import predict_bytes  # bytes in, probabilities out: no base64, no event

    out = {"kind": KIND, "import_s": t_import, "bytes_entry": "yogapose.app.predict_bytes",
           "images": wcommon.warm_images(images, events, handler_b64, predict_bytes, runs, budget)}
    out["rss"] = wcommon.peak_rss_mb()  # serving peak, before the extra interpreter below

    from yogapose.config import load_settings
    from yogapose.imaging import preprocess_bytes
    from yogapose.metadata import load_metadata

    settings = load_settings()
    prep = load_metadata(settings.model_path).preprocessing
    out["stages"] = stages(images, events, settings, prep, cfg)
    x = preprocess_bytes(next(iter(images.values())), prep, settings.max_pixels)
    out["infer"] = wcommon.summarize(
        infer_only(str(settings.model_path), settings.num_threads, x, cfg["infer_runs"], budget))
    wcommon.emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
