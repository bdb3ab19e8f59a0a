"""bench/float32.py: the shipped model's int8 weights, dequantized, compute what it computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from bench.float32 import NotDerivable, dequantize, verify
from convert.convert import Verification
from tests.tinymodel import INT8_NAME, TINY_DIR, TINY_NAME
from yogapose.metadata import PersonCrop, load_metadata

SHIPPED = Path(__file__).resolve().parents[2] / "model" / "yoga-pose.tflite"
DERIVABLE = ("dynamic_int8", "float16")  # the shipped quantizations bench/float32.py widens


@pytest.fixture(scope="module")
def derived(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHIPPED.exists() or load_metadata(SHIPPED).quantization not in DERIVABLE:
        pytest.skip("needs a shipped dynamic-range int8 or float16 model")
    import dataclasses

    from yogapose.metadata import sha256_file, write_metadata

    data, n = dequantize(SHIPPED.read_bytes())
    assert n > 10
    out = tmp_path_factory.mktemp("f32") / "f32.tflite"
    out.write_bytes(data)
    meta = load_metadata(SHIPPED)
    write_metadata(dataclasses.replace(meta, model_file=out.name, sha256=sha256_file(out), quantization="float32"), out)
    return out


def test_no_int8_weights_and_plain_float_op_versions(derived: Path) -> None:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(derived.read_bytes(), 0))
    assert all(t.type != schema.TensorType.INT8 for t in model.subgraphs[0].tensors)
    weight_ops = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                  schema.BuiltinOperator.FULLY_CONNECTED}
    versions = {c.version for c in model.operatorCodes if max(c.builtinCode, c.deprecatedBuiltinCode) in weight_ops}
    assert versions == {1}


def test_agrees_with_the_shipped_model(derived: Path, images: dict[str, bytes]) -> None:
    photos = [images[k] for k in ("jpeg", "jpeg_big", "jpeg_other", "png", "webp", "png_rgba")]
    agreement = verify(SHIPPED, derived, photos, "synthetic images")
    assert agreement.images == 6 and agreement.top1 >= 5 / 6, agreement.text()
    assert agreement.max_prob_diff < 0.5, agreement.text()


@pytest.mark.parametrize(("name", "why"), [(TINY_NAME, "already a float model"), (INT8_NAME, "activations")])
def test_refuses_models_that_are_not_dynamic_range(name: str, why: str) -> None:
    with pytest.raises(NotDerivable, match=why):
        dequantize((TINY_DIR / name).read_bytes())


def test_dequantized_values_are_scale_times_int(tmp_path: Path) -> None:
    """Per-channel weights along quantizedDimension: w = (q - zero_point) * scale."""
    if not SHIPPED.exists() or load_metadata(SHIPPED).quantization != "dynamic_int8":
        pytest.skip("needs the shipped dynamic-range int8 model")
    src = SHIPPED.read_bytes()
    before = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src, 0))
    after = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(dequantize(src)[0], 0))
    for t0, t1 in zip(before.subgraphs[0].tensors, after.subgraphs[0].tensors, strict=True):
        if t0.type != schema.TensorType.INT8:
            continue
        q = np.frombuffer(bytes(before.buffers[t0.buffer].data), np.int8).reshape(t0.shape).astype(np.float32)
        w = np.frombuffer(bytes(after.buffers[t1.buffer].data), np.float32).reshape(t1.shape)
        shape = [1] * q.ndim
        shape[t0.quantization.quantizedDimension] = len(t0.quantization.scale)
        np.testing.assert_allclose(w, q * np.asarray(t0.quantization.scale, np.float32).reshape(shape), rtol=1e-6)
        return
    pytest.fail("no int8 weights in the shipped model")


def test_float16_weights_widened_in_place_of_their_dequantize_ops() -> None:
    """A float16 model: each DEQUANTIZE of a float16 constant becomes that constant in
    float32 (exactly its values), and no other op changes."""
    if not SHIPPED.exists() or load_metadata(SHIPPED).quantization != "float16":
        pytest.skip("needs the shipped float16 model")
    src = SHIPPED.read_bytes()
    before = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src, 0))
    data, n = dequantize(src)
    after = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    g0, g1 = before.subgraphs[0], after.subgraphs[0]

    def code(m, op) -> int:
        c = m.operatorCodes[op.opcodeIndex]
        return max(c.builtinCode, c.deprecatedBuiltinCode)

    dequant = [op for op in g0.operators if code(before, op) == schema.BuiltinOperator.DEQUANTIZE]
    assert n == len(dequant) > 10
    assert not [op for op in g1.operators if code(after, op) == schema.BuiltinOperator.DEQUANTIZE]
    assert len(g1.operators) == len(g0.operators) - n
    for op in dequant:
        half = np.frombuffer(bytes(before.buffers[g0.tensors[op.inputs[0]].buffer].data), np.float16)
        wide = np.frombuffer(bytes(after.buffers[g1.tensors[op.outputs[0]].buffer].data), np.float32)
        np.testing.assert_array_equal(wide, half.astype(np.float32))


def test_copy_is_cached_with_its_metadata_and_the_person_detector(tmp_path: Path, monkeypatch) -> None:
    """Plumbing of float32_copy: verified once, cached by digest, detector beside it."""
    import hashlib
    import json
    import shutil

    import bench.float32 as f32

    if not SHIPPED.exists() or load_metadata(SHIPPED).quantization not in DERIVABLE:
        pytest.skip("needs a shipped dynamic-range int8 or float16 model")
    shipped = tmp_path / "model" / SHIPPED.name
    shipped.parent.mkdir()
    shutil.copyfile(SHIPPED, shipped)
    meta = json.loads(SHIPPED.with_suffix(".json").read_text())
    pinned = hashlib.sha256(b"detector").hexdigest()
    meta["preprocessing"]["person_crop"] = PersonCrop(detector_file="det.tflite", detector_sha256=pinned).to_dict()
    shipped.with_suffix(".json").write_text(json.dumps(meta))
    (shipped.parent / "det.tflite").write_bytes(b"detector")
    calls = []
    monkeypatch.setattr(f32, "val_images", lambda: [b"x"])
    agreed = f32.Agreement(Verification(300, 1.0, 0.01, 0.0), "val photos")
    monkeypatch.setattr(f32, "verify", lambda *a: calls.append(a) or agreed)

    made, note = f32.float32_copy(shipped, cache=tmp_path / "cache", log=lambda _m: None)
    assert made is not None and note.startswith("derived"), note
    assert load_metadata(made).quantization == "float32"
    assert load_metadata(made).extra["derived_from"]["sha256"] == f32.sha256_file(shipped)
    assert (made.parent / "det.tflite").read_bytes() == b"detector"
    again, note = f32.float32_copy(shipped, cache=tmp_path / "cache", log=lambda _m: None)
    assert again == made and note.startswith("cached") and len(calls) == 1  # verified once
    # A detector that is not the pinned file is not copied: no float32 copy, and the note says why.
    (shipped.parent / "det.tflite").write_bytes(b"another detector")
    refused, note = f32.float32_copy(shipped, cache=tmp_path / "other-cache", log=lambda _m: None)
    assert refused is None and "person detector" in note, note
    assert not list((tmp_path / "other-cache").glob("*/det.tflite"))


def test_a_copy_that_disagrees_is_refused_and_not_cached(tmp_path: Path, monkeypatch) -> None:
    import bench.float32 as f32

    if not SHIPPED.exists() or load_metadata(SHIPPED).quantization not in DERIVABLE:
        pytest.skip("needs a shipped dynamic-range int8 or float16 model")
    monkeypatch.setattr(f32, "val_images", lambda: [b"x"])
    monkeypatch.setattr(f32, "verify", lambda *a: f32.Agreement(Verification(300, 0.9, 0.7, 0.0), "val photos"))
    made, note = f32.float32_copy(SHIPPED, cache=tmp_path / "cache", log=lambda _m: None)
    assert made is None and "rejected" in note
    assert not any((tmp_path / "cache").glob("*/*.tflite"))


def test_the_copy_is_checked_as_the_converter_checks_a_variant() -> None:
    """Clear answers must agree (>= 0.99); near-ties may flip as long as >= 0.98 agree overall:
    the converter's own rule (``convert.convert``), not a stricter one of the bench's."""
    import bench.float32 as f32

    assert f32.Agreement(Verification(300, 0.987, 0.12, 0.0, 300, 1.0), "val photos").ok  # 4 near-ties flipped
    assert not f32.Agreement(Verification(300, 0.987, 0.12, 0.0, 300, 0.985), "val photos").ok  # clear answers differ
    assert not f32.Agreement(Verification(300, 0.97, 0.12, 0.0, 300, 1.0), "val photos").ok  # too many overall
    assert not f32.Agreement(Verification(300, 1.0, 0.7, 0.0, 300, 1.0), "val photos").ok  # probabilities too far apart
