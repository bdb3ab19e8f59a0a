"""A float32 copy of the shipped model, for the reference stack: same weights, no training run.

The shipped model stores its weights in less than float32 and computes in float32:

* dynamic-range int8: weights as int8 with a scale per output channel. tflite-runtime 2.14
  (the reference stack) cannot load it: its hybrid kernels are older than the op versions
  the converter now writes ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version
  '12'"). Dequantizing each weight, ``w = (q - zero_point) * scale``, gives the float
  weights the shipped model effectively computes with, and plain float ops (version 1)
  every TFLite runtime has.
* float16: weights as float16 constants, each widened by a DEQUANTIZE op before use.
  Widening them once here (exact: every float16 is a float32) and dropping those ops gives
  the plain float32 graph the reference stack was built for.

The graph, the biases and the input/output tensors stay as they are otherwise.

Read and written with the flatbuffer schema's object API that ai-edge-litert ships
(``ai_edge_litert.schema_py_generated``), so no TensorFlow is needed. The result is cached
under ``build/bench/``, keyed by the shipped model's and metadata's sha256, and is verified
before use: on val photos its top-1 must agree with the shipped model and the probabilities
stay close (:func:`verify`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from convert.convert import DEFAULT_MAX_DIFF, DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_OVERALL_AGREEMENT, Verification
from localtools.assets import copy_detector
from yogapose.metadata import load_metadata, sha256_file, write_metadata

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "build" / "bench"
#: Ops whose hybrid (int8-weight) kernels exist at higher versions than their float ones.
_WEIGHT_OPS = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
               schema.BuiltinOperator.FULLY_CONNECTED}
# The copy must agree with the shipped model as closely as the converter required the
# shipped (dynamic int8) model to agree with Keras: same thresholds, one home.
MIN_AGREEMENT = DEFAULT_MIN_AGREEMENT  # top-1 on clear answers (top two >= 0.5 apart)
MIN_OVERALL_AGREEMENT = DEFAULT_MIN_OVERALL_AGREEMENT  # top-1 on all (near-ties flip under any rounding)
MAX_PROB_DIFF = DEFAULT_MAX_DIFF["dynamic_int8"]  # largest |p_float - p_shipped|


class NotDerivable(ValueError):
    """The model is not one whose weights alone are quantized."""


def _opcode(code: Any) -> int:
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def dequantize(src: bytes) -> tuple[bytes, int]:
    """A dynamic-range int8 or float16 flatbuffer -> (float32 flatbuffer, number of weights
    dequantized)."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src, 0))
    if len(model.subgraphs) != 1:
        raise NotDerivable(f"{len(model.subgraphs)} subgraphs; expected one")
    graph = model.subgraphs[0]
    for i in list(graph.inputs) + list(graph.outputs):
        if graph.tensors[i].type != schema.TensorType.FLOAT32:
            raise NotDerivable("quantized input/output tensors: activations are quantized too")
    done = _dequantize_int8(model)
    if done == 0:
        done = _widen_float16(model)
    if done == 0:
        raise NotDerivable("no int8 or float16 weights: already a float model")
    for code in model.operatorCodes:
        if _opcode(code) in _WEIGHT_OPS:
            code.version = 1
    builder = flatbuffers.Builder(len(src) * 4 + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), done


def _dequantize_int8(model: Any) -> int:
    """int8 weights -> ``(q - zero_point) * scale`` in float32, in place; -> how many."""
    graph, done = model.subgraphs[0], 0
    for tensor in graph.tensors:
        buf = model.buffers[tensor.buffer]
        q = tensor.quantization
        if tensor.type != schema.TensorType.INT8 or buf.data is None or len(buf.data) == 0:
            if tensor.type == schema.TensorType.INT8:
                raise NotDerivable(f"int8 activation tensor {tensor.name!r}: not a dynamic-range model")
            continue
        if q is None or q.scale is None or len(q.scale) == 0:
            raise NotDerivable(f"int8 weights {tensor.name!r} without a scale")
        weights = np.frombuffer(bytes(buf.data), np.int8).astype(np.float32).reshape(tensor.shape)
        scale = np.asarray(q.scale, np.float32)
        zero = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.float32)
        shape = [1] * weights.ndim
        if scale.size > 1:  # one scale per channel, along quantizedDimension
            shape[q.quantizedDimension] = scale.size
        zero = zero.reshape(shape) if zero.size == scale.size else zero[:1]
        buf.data = np.ascontiguousarray((weights - zero) * scale.reshape(shape), np.float32).reshape(-1).view(np.uint8)
        tensor.type = schema.TensorType.FLOAT32
        tensor.quantization = None
        done += 1
    return done


def _widen_float16(model: Any) -> int:
    """float16 weights -> float32 constants in place of the DEQUANTIZE ops that widened
    them; -> how many. The float16 copies are emptied (no op reads them any more)."""
    graph = model.subgraphs[0]
    kept, done = [], 0
    for op in graph.operators:
        inputs = list(op.inputs) if op.inputs is not None else []
        if _opcode(model.operatorCodes[op.opcodeIndex]) == schema.BuiltinOperator.DEQUANTIZE and len(inputs) == 1:
            half = graph.tensors[inputs[0]]
            buf = model.buffers[half.buffer]
            if half.type == schema.TensorType.FLOAT16 and buf.data is not None and len(buf.data):
                widened = schema.BufferT()
                widened.data = np.frombuffer(bytes(buf.data), np.float16).astype(np.float32).view(np.uint8)
                model.buffers.append(widened)
                graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
                buf.data = None
                done += 1
                continue
        kept.append(op)
    graph.operators = kept
    return done


@dataclass
class Agreement:
    """The converter's comparison of the copy with the shipped model (``convert.convert``), and on what."""

    result: Verification
    source: str

    @property
    def images(self) -> int:
        return self.result.images

    @property
    def top1(self) -> float:
        return self.result.top1_agreement

    @property
    def max_prob_diff(self) -> float:
        return self.result.max_abs_diff

    @property
    def ok(self) -> bool:
        """The converter's own rule, one home: clear answers agree, near-ties may flip."""
        return self.images > 0 and self.result.passes(MIN_AGREEMENT, MAX_PROB_DIFF, MIN_OVERALL_AGREEMENT)

    def text(self) -> str:
        return (f"top-1 agreement {self.top1:.3f} ({self.result.clear_agreement:.3f} on clear answers), "
                f"max |Δp| {self.max_prob_diff:.3f} on {self.images} {self.source}")


def verify(shipped: Path, derived: Path, images: Iterable[bytes], source: str) -> Agreement:
    """Both models on the same inputs (the serving preprocessing, person crop included);
    how far do their answers differ? Compared as the converter compares a flatbuffer with
    Keras (``convert.convert.verify``): logit outputs (an open-set model's) as their softmax."""
    from convert.convert import verify as compare
    from yogapose.preprocess import Preprocessor
    from yogapose.runtime import Model

    a, b = Model.load(shipped, num_threads=2), Model.load(derived, num_threads=2)
    pre = Preprocessor.for_model(a.metadata.preprocessing, shipped.parent, num_threads=2)
    outs_a, outs_b = [], []
    for data in images:
        x = pre.to_input(pre.from_bytes(data, 40_000_000))
        outs_a.append(a.predict(x))
        outs_b.append(b.predict(x))
    if not outs_a:
        return Agreement(Verification(0, 0.0, 0.0, 0.0), source)
    logits = a.metadata.output_activation == "linear"
    return Agreement(compare(np.stack(outs_a), np.stack(outs_b), logits=logits), source)


def val_images(n: int = 300) -> list[bytes]:
    """``n`` val photos spread over the classes (the bench needs ``../shared`` anyway)."""
    from bench.images import val_photos

    return [p.read_bytes() for p in val_photos(n)]


def float32_copy(shipped: Path, cache: Path = CACHE, log: Any = print) -> tuple[Path | None, str]:
    """-> (the verified float32 copy of ``shipped`` or None, a note saying what happened)."""
    meta = load_metadata(shipped)
    if meta.quantization == "float32":
        return shipped, "the shipped model is float32 already"
    digest = sha256_file(shipped)
    # Keyed by the model and its metadata: a metadata change (labels, preprocessing) makes a new copy.
    key = hashlib.sha256(f"{digest} {sha256_file(shipped.with_suffix('.json'))}".encode()).hexdigest()[:12]
    out = cache / f"float32-of-{key}" / "yoga-pose-float32.tflite"
    report = out.with_name("agreement.json")
    if out.exists() and report.exists():
        if (missing := _copy_detector(meta, shipped.parent, out.parent)) is not None:
            return None, f"no float32 copy of the shipped model: {missing}"
        checked = json.loads(report.read_text())
        return out, f"cached {_shown(out)}: {checked['text']}"
    try:
        data, n = dequantize(shipped.read_bytes())
    except NotDerivable as exc:
        return None, f"no float32 copy of the shipped model ({meta.quantization}): {exc}"
    tmp = out.parent.with_name(out.parent.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    path = tmp / out.name
    path.write_bytes(data)
    write_metadata(_float_metadata(meta, path, digest), path)
    if (missing := _copy_detector(meta, shipped.parent, tmp)) is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"no float32 copy of the shipped model: {missing}"
    log(f"derived {n} float32 weight tensors from {shipped.name}; verifying")
    agreement = verify(shipped, path, val_images(), "val photos")
    if not agreement.ok:
        shutil.rmtree(tmp, ignore_errors=True)
        return None, f"float32 copy rejected: {agreement.text()}"
    checked = {"text": agreement.text(), "source": agreement.source, **agreement.result.to_dict()}
    (tmp / report.name).write_text(json.dumps(checked) + "\n")
    shutil.rmtree(out.parent, ignore_errors=True)
    tmp.rename(out.parent)
    return out, f"derived {_shown(out)}: {agreement.text()}"


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def _copy_detector(meta: Any, src_dir: Path, dst_dir: Path) -> str | None:
    """The person detector the metadata names sits beside the model: beside the copy too
    (hash checked by :func:`localtools.assets.copy_detector`, the pipeline's helper too).
    Returns why not, or None."""
    crop = getattr(meta.preprocessing, "person_crop", None)
    if crop is None or copy_detector(crop.detector_file, crop.detector_sha256, dst_dir, src_dir):
        return None
    return f"{src_dir} does not hold the person detector the metadata pins ({crop.detector_file}): run bash .ci/setup"


def _float_metadata(meta: Any, path: Path, shipped_digest: str) -> Any:
    import dataclasses

    extra = {k: v for k, v in meta.extra.items() if k not in {"training", "validation", "evaluation"}}
    extra["derived_from"] = {"sha256": shipped_digest,
                             "how": f"bench/float32.py: {meta.quantization} weights dequantized"}
    return dataclasses.replace(meta, name=f"{meta.name}-float32", model_file=path.name, sha256=sha256_file(path),
                               quantization="float32", extra=extra)


if __name__ == "__main__":  # python -m bench.float32 [model]
    import sys

    made, note = float32_copy(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "model" / "yoga-pose.tflite")
    print(note)
    sys.exit(0 if made else 1)
