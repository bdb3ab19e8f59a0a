"""Bench worker for this project's serving stack (runs in the project venv, Python 3.12).

    python bench/ours_worker.py '<json config>'

The model and thread count come from the environment, exactly as in Lambda
(MODEL_PATH, NUM_THREADS). Modes:

* ``cold``: import ``lambda_function`` (model load + warm-up happen at import) and answer
  one direct ``{"image": <b64>}`` event; the orchestrator times spawn -> answer line.
* ``warm``: import once, then time the handler on every image (direct event, base64
  included) and the app-level bytes function (no base64), record peak RSS, then time each
  stage alone (the person detector as its own stage), inference alone on a separate
  interpreter with the same model and threads and, when asked (``crop_cost``) and the
  metadata has a person crop, what the crop adds to a request (:func:`crop_cost`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)  # Lambda's task root: where lambda_function.py lives

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:  # mypy checks bench/ as a package
    from collections.abc import Callable
    from types import ModuleType

    import numpy as np
    from PIL import Image

    from bench import wcommon
    from yogapose.config import Settings
    from yogapose.deadline import Deadline
    from yogapose.metadata import Preprocessing
    from yogapose.person import PersonBox
    from yogapose.preprocess import Preprocessor
else:  # run as a script: bench/ is on sys.path (above)
    import wcommon

from localtools.context import LambdaContext

KIND = "lambda_function"


def import_handler(task_root: str = REPO) -> ModuleType:
    """Import ``lambda_function`` (model load + warm-up happen here, as in a cold start).

    ``task_root`` may point at a copy of the deployable code (lambda_function.py +
    yogapose/) to import it from there, e.g. without its ``__pycache__``.
    """
    if task_root != REPO:
        sys.path.insert(0, task_root)
    import lambda_function

    return lambda_function


def infer_only(model_path: str, threads: int, x: np.ndarray, runs: int, budget: float) -> list:
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


def fetch_mode(cfg: dict) -> int:
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


def _draft_decode(data: bytes, size: tuple[int, int]) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", size)
        im.load()


class _FoundAlready:
    """A stand-in detector that answers with a box found before: ``Preprocessor.frame``
    through it times the app's own crop + resize without the detection."""

    def __init__(self, person: PersonBox | None) -> None:
        self.person = person

    # PersonDetector.find_people's signature: mypy holds it to yogapose.preprocess.PeopleFinder.
    def find_people(self, img: Image.Image, limit: int = 1,
                    deadline: Deadline | None = None) -> list[PersonBox]:
        return [self.person] if self.person is not None else []


def stages(images: dict, events: dict, settings: Settings, prep: Preprocessing, pre: Preprocessor,
           cfg: dict) -> dict:
    """Per-stage medians of the request path, per image, through the app's own
    ``Preprocessor``: base64, decode (EXIF, alpha, draft), the person detector
    (``find_people`` with the metadata's candidate count, windows included when it searches
    them), crop + resize of the first candidate, tensor."""
    from yogapose.b64 import decode_payload
    from yogapose.preprocess import Preprocessor

    def b64(text: str) -> bytes:
        return decode_payload(text, "image", settings.max_bytes)

    def timed(fn: Callable[..., object]) -> dict:
        return wcommon.summarize(wcommon.timeit(fn, runs, 1.0, min_runs=3))

    runs = max(3, min(10, cfg["infer_runs"] // 4))
    res = {}
    for name, data in images.items():
        text = events[name]["image"]
        decoded = pre.decode(data, settings.max_pixels)
        limit = pre.candidate_limit
        people = pre.detector.find_people(decoded, limit) if pre.detector is not None else []
        person = people[0] if people else None
        cropper = Preprocessor(prep, _FoundAlready(person)) if pre.detector is not None else pre
        framed = cropper.frame(decoded)
        res[name] = {
            "base64": timed(lambda t=text: b64(t)),
            "decode": timed(lambda d=data: pre.decode(d, settings.max_pixels)),
            "crop_resize": timed(lambda i=decoded, c=cropper: c.frame(i)),
            "to_tensor": timed(lambda f=framed: pre.to_input(f)),
            "person_found": person is not None,
            "candidates": max(1, len(people)),  # crops the classifier runs on
        }
        if (detector := pre.detector) is not None:
            res[name]["detect"] = timed(lambda i=decoded, n=limit, d=detector: d.find_people(i, n))
        if data[:3] == b"\xff\xd8\xff":
            # libjpeg-turbo alone at the draft scale the decode uses: the entropy decode of
            # every coefficient is the part no resize or copy trick can avoid.
            res[name]["jpeg_draft_decode"] = timed(lambda d=data: _draft_decode(d, pre.draft_size))
    return res


def nocrop_copy(model: Path, dst_dir: Path) -> Path:
    """The same flatbuffer (a hard link, else a copy) with metadata whose ``person_crop``
    is null: the app serves it exactly as before the person detector existed."""
    from yogapose.metadata import load_metadata, write_metadata

    meta = load_metadata(model)
    dst = dst_dir / model.name
    try:
        os.link(model, dst)
    except OSError:
        shutil.copyfile(model, dst)
    write_metadata(dataclasses.replace(
        meta, preprocessing=dataclasses.replace(meta.preprocessing, person_crop=None)), dst)
    return dst


def crop_cost(images: dict, events: dict, cfg: dict) -> dict:
    """Issue 10's budget: what detection + crop add to a warm request.

    Two apps in this one process, the shipped model with its metadata and the same
    flatbuffer with ``person_crop`` null (:func:`nocrop_copy`), answer the same direct
    event in alternating pairs (the order flips every pair), so background load on a
    shared machine hits both alike; the added cost is the median of the per-pair
    differences. It includes everything the crop brings: the detector, the crop and the
    larger decode it needs (``decode_min_side``).
    """
    from yogapose.app import get_app
    from yogapose.config import load_settings
    from yogapose.observability import RequestStats

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="bench-nocrop-") as tmp:
        plain = nocrop_copy(Path(settings.model_path), Path(tmp))
        apps = {"with": get_app(settings),
                "without": get_app(load_settings({**os.environ, "MODEL_PATH": str(plain)}))}
        out = {}
        for name, event in events.items():
            for app in apps.values():  # warm both paths
                app.handle(dict(event))
                app.handle(dict(event))
            runs, budget = cfg["runs"][name], 2 * cfg["budget_s"]
            times: dict[str, list] = {"with": [], "without": []}
            start = time.perf_counter()
            for i in range(runs):
                for key in (("with", "without") if i % 2 == 0 else ("without", "with")):
                    t0 = time.perf_counter()
                    apps[key].handle(dict(event))
                    times[key].append(time.perf_counter() - t0)
                if i + 1 >= 5 and time.perf_counter() - start > budget:
                    break
            decoded = apps["with"].preprocessor.decode(images[name], settings.max_pixels)
            flipped = {}
            for key, app in apps.items():  # crops classified mirrored too: one more inference each
                stats = RequestStats()
                app.classify(images[name], stats)
                flipped[key] = stats.flipped
            out[name] = {
                "with": wcommon.summarize(times["with"]), "without": wcommon.summarize(times["without"]),
                "added": wcommon.summarize([a - b for a, b in zip(times["with"], times["without"], strict=True)]),
                "person_found": apps["with"].preprocessor.frames(decoded)[0].person is not None,
                "flipped": flipped,
            }
    return out


OVERLAPPED_PREFIX = "(overlapped) "


def init_parts(cfg: dict) -> int:
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
    from yogapose.metadata import load_metadata
    from yogapose.preprocess import Preprocessor

    settings = load_settings()
    prep = load_metadata(settings.model_path).preprocessing
    # One preprocessor (one detector) for the stage timings and the infer-only input: the
    # model's own preprocessing, person crop included.
    pre = Preprocessor.for_model(prep, settings.model_path.parent, settings.num_threads)
    out["stages"] = stages(images, events, settings, prep, pre, cfg)
    x = pre.tensor(next(iter(images.values())), settings.max_pixels)
    out["infer"] = wcommon.summarize(
        infer_only(str(settings.model_path), settings.num_threads, x, cfg["infer_runs"], budget))
    if cfg.get("crop_cost") and prep.person_crop is not None:
        out["crop_cost"] = crop_cost(images, events, cfg)
    wcommon.emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
