"""Helpers shared by the bench workers and the orchestrator.

Standard library only and Python 3.8+ syntax: the reference worker imports this module from
the reference virtualenv (Python 3.11, numpy < 2), the others from the project venv.

Workers talk to the orchestrator with single JSON lines on stdout prefixed by ``MARK``, so
whatever else a library prints (TFLite's INFO lines, Powertools' JSON logs) cannot be
mistaken for a result.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

MARK = "@@BENCH "


def emit(obj: object) -> None:
    """Send one protocol message (a JSON object) to the orchestrator."""
    sys.stdout.write(MARK + json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse_messages(text: str) -> list:
    """All protocol messages in a worker's stdout, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith(MARK):
            out.append(json.loads(line[len(MARK):]))
    return out


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(seconds: Iterable[float]) -> dict:
    """Milliseconds: median, p95, min, n (raw samples kept for the JSON results)."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "median_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "min_ms": min(ms) if ms else float("nan"),
        "n": len(ms),
        "samples_ms": [round(x, 3) for x in ms],
    }


# ``fn`` takes no arguments; ``...`` because mypy cannot match ``lambda x=x: ...`` to ``Callable[[], ...]``.
def timeit(fn: Callable[..., object], runs: int, budget_s: float, warmup: int = 1, min_runs: int = 5) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then up to ``runs`` timed calls.

    Stops early once ``budget_s`` is spent (but never below ``min_runs``), which keeps the
    whole bench bounded on a slow or busy machine.
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if i + 1 >= min_runs and time.perf_counter() - start > budget_s:
            break
    return times


def peak_rss_mb() -> dict:
    """Peak resident set size of this process so far, two ways (they agree on Linux)."""
    hwm = None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    return {"vmhwm_mb": hwm, "ru_maxrss_mb": maxrss}


def read_images(paths: Iterable[str]) -> dict[str, bytes]:
    """name -> bytes, read once up front so disk I/O is never inside a timed call."""
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[os.path.basename(p)] = f.read()
    return out


def top_of(obj: object) -> list | None:
    """Find a {label: probability} mapping anywhere in a handler response -> (label, p).

    The handler may answer with a plain mapping or an HTTP-shaped response whose body is
    JSON; the bench only needs the top class to check every stack answered sensibly.
    """
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except ValueError:
            return None
    if isinstance(obj, dict):
        vals = list(obj.values())
        if len(vals) >= 2 and all(isinstance(v, float) for v in vals):
            k = max(obj, key=lambda key: obj[key])
            return [k, obj[k]]
        for v in obj.values():
            found = top_of(v)
            if found:
                return found
    if isinstance(obj, list):
        for v in obj:
            found = top_of(v)
            if found:
                return found
    return None


class Stopwatch:
    """Milliseconds between successive ``mark(name)`` calls, for the cold-start anatomy."""

    def __init__(self) -> None:
        self.marks: list = []
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks.append([name, (now - self._last) * 1000])
        self._last = now


def time_imports(watch: Stopwatch, steps: list[tuple[str, list[str]]]) -> None:
    """Import each step's modules in order, one mark per step: what an init pays for them."""
    import importlib

    for label, modules in steps:
        for name in modules:
            importlib.import_module(name)
        watch.mark(label)


def time_interpreter_init(it: Any, zeros: Callable[..., Any], watch: Stopwatch, first_invoke: str) -> None:
    """allocate_tensors, the first invoke (named by the caller) and a second, steady one.

    ``zeros(shape, dtype)`` is numpy's, passed in so this module imports no numpy.
    """
    it.allocate_tensors()
    watch.mark("Interpreter + allocate_tensors")
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], zeros(d["shape"], d["dtype"]))
    it.invoke()
    watch.mark(first_invoke)
    it.invoke()
    watch.mark("second invoke")


def emit_cold(kind: str, t_import: float, handler_b64: Callable[[dict], object], event: dict) -> int:
    """Answer one request in this fresh process and report what the first one cost."""
    t1 = time.perf_counter()
    resp = handler_b64(event)
    emit({"answer": top_of(resp), "kind": kind, "import_s": t_import,
          "first_call_s": time.perf_counter() - t1, "rss": peak_rss_mb()})
    return 0


def warm_images(images: dict, events: dict, handler_b64: Callable[[dict], object],
                predict_bytes: Callable[[bytes], object] | None, runs: dict, budget: float) -> dict:
    """Per image: the top answer, warm latency through the base64 event and, where the stack
    has one, through its bytes-in entry point."""
    out = {}
    for name, data in images.items():
        event = events[name]
        res: dict[str, object] = {"answer": top_of(handler_b64(event))}
        res["handler_b64"] = summarize(timeit(lambda e=event: handler_b64(e), runs[name], budget))
        if predict_bytes is not None:
            res["app_bytes"] = summarize(timeit(lambda d=data: predict_bytes(d), runs[name], budget))
        out[name] = res
    return out
