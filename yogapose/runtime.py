"""The model runtime: one LiteRT interpreter, verified against its metadata and warmed up.

Why it looks like this:

* ``ai-edge-litert`` is the maintained successor of ``tflite-runtime`` (which stopped at
  Python 3.11 / numpy 1); the import falls back to ``tflite_runtime`` for old environments.
* The flatbuffer's sha256 must match the metadata next to it: a model swapped without its
  metadata would silently get the wrong labels or preprocessing. Refusing at init turns
  that into a failed deploy instead of wrong answers.
* The first ``invoke()`` allocates XNNPACK's packed weights and scratch buffers; doing it in
  :meth:`Model.load` moves that cost into the Lambda init phase, off the first request.
* Quantized (int8/uint8) input or output tensors are handled with the tensor's own
  quantization parameters, so callers always pass floats in and get probabilities out.

Not thread-safe by nature (one interpreter, one set of buffers); a lock serialises
``predict`` so a threaded local server cannot interleave two requests. Lambda runs one
request per execution environment at a time, so the lock is never contended there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metadata import ModelMetadata, load_metadata, sha256_file

try:  # the maintained LiteRT wheel (Python 3.12, numpy 2)
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - legacy environments only
    from tflite_runtime.interpreter import Interpreter


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int
    dtype: np.dtype

    @classmethod
    def of(cls, details: dict[str, Any]) -> Quantization | None:
        """The tensor's quantization, or None for a float tensor."""
        dtype = np.dtype(details["dtype"])
        if dtype.kind == "f":
            return None
        scale, zero_point = details.get("quantization", (0.0, 0))
        if not scale:
            raise RuntimeError(
                f"tensor {details.get('name')!r} is {dtype} without quantization parameters"
            )
        return cls(float(scale), int(zero_point), dtype)

    def quantize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Float -> integer with round-half-to-even and saturation at the dtype's range."""
        info = np.iinfo(self.dtype)
        q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(self.scale)) + self.zero_point
        np.clip(q, info.min, info.max, out=q)
        if out is None:
            return q.astype(self.dtype)
        out[...] = q
        return out

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, dtype=np.float32) - np.float32(self.zero_point)) * np.float32(self.scale)


def _check_digest(path: Path, digest: list[str], expected: str, cause: BaseException | None = None) -> None:
    got = digest[0] if digest else None
    if got == expected:
        return
    error = RuntimeError(
        f"{path.name}: sha256 {(got or 'unreadable')[:12]}... does not match its metadata "
        f"({expected[:12]}...); the model and {path.with_suffix('.json').name} must be shipped together"
    )
    raise error from cause


def model_metadata(model_path: Path | str) -> ModelMetadata:
    """The metadata of the model at ``model_path``, checked to be about that file; RuntimeError
    naming what is missing or mismatched (``Model.load`` and the CLI's workers' parent)."""
    path = Path(model_path)
    if not path.is_file():
        raise RuntimeError(f"model file not found: {path} (MODEL_PATH, or --model in the CLI, names it)")
    try:
        metadata = load_metadata(path)
    except FileNotFoundError:
        raise RuntimeError(f"model metadata not found next to the model: {path.with_suffix('.json')}") from None
    if metadata.model_file not in (path.name, path.resolve().name):  # a symlink may rename it
        # Metadata is found by name (x.tflite -> x.json): one copied or renamed beside
        # another model says so here, before the digest would (after a cold start's work).
        raise RuntimeError(
            f"{path.with_suffix('.json').name} describes {metadata.model_file!r}, not {path.name!r}: "
            "keep a model and its metadata together, under the names they were converted with"
        )
    return metadata


class Model:
    """A loaded, verified and warmed-up interpreter plus its metadata."""

    def __init__(self, interpreter: Any, metadata: ModelMetadata, num_threads: int, path: Path) -> None:
        self.metadata = metadata
        self.num_threads = num_threads
        self.path = path
        self._interp = interpreter
        self._lock = threading.Lock()
        inp = interpreter.get_input_details()
        out = interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise RuntimeError(f"{path.name}: expected 1 input and 1 output, got {len(inp)} and {len(out)}")
        self._in_index = int(inp[0]["index"])
        self._out_index = int(out[0]["index"])
        self._in_quant = Quantization.of(inp[0])
        self._out_quant = Quantization.of(out[0])
        self.input_shape = tuple(int(d) for d in inp[0]["shape"])
        self.input_dtype = np.dtype(inp[0]["dtype"])
        self.output_shape = tuple(int(d) for d in out[0]["shape"])
        self._check_signature(inp[0])
        # Scratch float buffer for quantized inputs (the caller still writes floats).
        self._scratch = (
            np.zeros(self.input_shape, np.float32) if self._in_quant is not None else None
        )

    @classmethod
    def load(cls, model_path: Path | str, num_threads: int = 1, warm_up: bool = True) -> Model:
        """Load ``model_path`` (+ its ``.json`` metadata), verify, allocate and warm up.

        Raises RuntimeError with a clear message when the flatbuffer does not match its
        metadata (sha256, input shape/dtype, number of labels).
        """
        path = Path(model_path)
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        metadata = model_metadata(path)
        # The digest is computed on a second thread while LiteRT maps, allocates and warms up
        # (hashlib and invoke both release the GIL), so the check adds nothing to a cold start
        # that has a second core. Nothing is served before it matches, and a mismatch is
        # reported in preference to whatever a wrong flatbuffer makes LiteRT raise.
        digest: list[str] = []
        hasher = threading.Thread(target=lambda: digest.append(sha256_file(path)), name="model-sha256", daemon=True)
        hasher.start()
        try:
            # model_path (not model_content): LiteRT mmaps the file instead of copying it.
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
            model = cls(interpreter, metadata, num_threads, path)
            if warm_up:
                model.predict(np.zeros(model.input_shape, np.float32))
        except Exception as exc:
            hasher.join()
            _check_digest(path, digest, metadata.sha256, cause=exc)
            raise
        hasher.join()
        _check_digest(path, digest, metadata.sha256)
        return model

    def _check_signature(self, inp: dict[str, Any]) -> None:
        meta = self.metadata
        if tuple(meta.input_shape) != self.input_shape:
            raise RuntimeError(
                f"{self.path.name}: input shape {list(self.input_shape)} does not match the "
                f"metadata's {list(meta.input_shape)}"
            )
        declared = np.dtype(meta.input_dtype)
        # A full-integer model may keep float I/O (then the dtypes agree) or expose int8/uint8
        # input while the metadata describes the float array callers pass; both are served.
        if declared != self.input_dtype and not (declared.kind == "f" and self._in_quant is not None):
            raise RuntimeError(
                f"{self.path.name}: input dtype {self.input_dtype} does not match the "
                f"metadata's {declared}"
            )
        n_out = int(np.prod(self.output_shape))
        if n_out != len(meta.outputs):
            raise RuntimeError(
                f"{self.path.name}: model has {n_out} outputs but the metadata lists "
                f"{len(meta.labels)} labels"
                + (f" plus the outlier output {meta.outlier_label!r}" if meta.outlier_label else "")
            )

    @property
    def quantized_input(self) -> bool:
        return self._in_quant is not None

    @property
    def quantized_output(self) -> bool:
        return self._out_quant is not None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float input of ``input_shape`` -> float32 outputs, shape (n_outputs,)."""
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ValueError(f"input has shape {x.shape}, the model expects {self.input_shape}")

        def fill(buf: np.ndarray) -> None:
            buf[...] = x

        return self.predict_with(fill)

    def predict_with(self, fill: Callable[[np.ndarray], Any]) -> np.ndarray:
        """Run inference with ``fill(buf)`` writing the float input into ``buf`` in place.

        For a float model ``buf`` is a view of the interpreter's own input tensor, so e.g.
        ``imaging.to_input_array(img, prep, out=buf)`` fills it without a temporary array.
        For a quantized input, ``buf`` is a float scratch array that is quantized afterwards.
        """
        with self._lock:
            if self._in_quant is None:
                view = self._interp.tensor(self._in_index)()
                try:
                    fill(view)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    # invoke() refuses to run while a numpy view into its buffers is alive;
                    # a traceback kept by a caller would keep ``view`` alive through the
                    # frames it references, so drop them.
                    del view
                    raise exc.with_traceback(None) from None
                del view
            else:
                assert self._scratch is not None
                fill(self._scratch)
                view = self._interp.tensor(self._in_index)()
                self._in_quant.quantize(self._scratch, out=view)
                del view
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out_index)  # a copy, safe after the lock
        probs = raw.reshape(-1)
        if self._out_quant is not None:
            probs = self._out_quant.dequantize(probs)
        return probs.astype(np.float32, copy=False)
