"""The LiteRT runtime: refuses models that do not match their metadata, honours the thread
count, and serves quantized (int8 in/out) models with floats in and probabilities out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.tinymodel import smooth_image
from yogapose.runtime import Model, Quantization


def copy_model(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name  # the name the metadata's model_file gives
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def edit_metadata(model: Path, **changes) -> None:
    data = json.loads(model.with_suffix(".json").read_text())
    data.update(changes)
    model.with_suffix(".json").write_text(json.dumps(data))


def test_loads_and_predicts_probabilities(tiny_model_path):
    model = Model.load(tiny_model_path)
    assert model.input_shape == (1, 150, 150, 3)
    x = np.random.default_rng(0).uniform(-1, 1, model.input_shape).astype(np.float32)
    probs = model.predict(x)
    assert probs.dtype == np.float32 and probs.shape == (6,)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_metadata_beside_a_model_of_another_name_is_refused(tiny_model_path, tmp_path):
    """Metadata is found by name (x.tflite -> x.json); one that describes another file (a
    model renamed, or metadata copied beside another model) is refused by name."""
    model = tmp_path / "renamed.tflite"
    shutil.copyfile(tiny_model_path, model)
    shutil.copyfile(tiny_model_path.with_suffix(".json"), model.with_suffix(".json"))
    with pytest.raises(RuntimeError, match=f"renamed.json describes '{tiny_model_path.name}', not 'renamed.tflite'"):
        Model.load(model)
    edit_metadata(model, model_file="renamed.tflite")
    assert Model.load(model).metadata.model_file == "renamed.tflite"
    # A symlink ("current" -> the converted name) is the file it points at.
    current = tmp_path / "current.tflite"
    current.symlink_to(model)
    current.with_suffix(".json").symlink_to(model.with_suffix(".json"))
    assert Model.load(current).metadata.model_file == "renamed.tflite"


def test_sha256_mismatch_is_refused(tiny_model_path, tmp_path):
    model = copy_model(tiny_model_path, tmp_path)
    edit_metadata(model, sha256="0" * 64)
    with pytest.raises(RuntimeError, match="sha256 .* does not match its metadata"):
        Model.load(model)


def test_modified_flatbuffer_is_refused(tiny_model_path, tmp_path):
    model = copy_model(tiny_model_path, tmp_path)
    with open(model, "ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        Model.load(model)


def test_unloadable_flatbuffer_reports_the_digest_mismatch(tiny_model_path, tmp_path):
    # LiteRT fails first on garbage (the digest runs on another thread); the error still
    # names the cause the operator can act on.
    model = copy_model(tiny_model_path, tmp_path)
    model.write_bytes(b"not a flatbuffer" * 64)
    with pytest.raises(RuntimeError, match="sha256 .* does not match its metadata") as info:
        Model.load(model)
    assert info.value.__cause__ is not None  # LiteRT's own error is kept as the cause


def test_input_shape_mismatch_is_refused(tiny_model_path, tmp_path):
    model = copy_model(tiny_model_path, tmp_path)
    data = json.loads(model.with_suffix(".json").read_text())
    data["input"]["shape"] = [1, 224, 224, 3]
    data["preprocessing"]["resize"]["size"] = [224, 224]  # consistent metadata, wrong flatbuffer
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match=r"input shape \[1, 150, 150, 3\] does not match"):
        Model.load(model)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["preprocessing"]["resize"].update(interpolation="bilnear"), "interpolation 'bilnear' is not one of"),
    (lambda d: d["preprocessing"]["resize"].update(size=[160, 160]), r"resize size \[160, 160\] .* does not match"),
    (lambda d: d["preprocessing"].pop("resize"), "is not valid model metadata .missing field 'resize'"),
    (lambda d: d.update(labels=7), "is not valid model metadata .TypeError"),
    (lambda d: d["input"].update(layout="NCHW"), "input layout 'NCHW' is not supported"),
    (lambda d: d["preprocessing"]["resize"].update(library="opencv"), "resize library 'opencv' is not supported"),
    (lambda d: d["preprocessing"]["scale"].update(formula="x / 255"), "scale formula 'x / 255' is not supported"),
])
def test_metadata_that_would_fail_every_request_is_refused_at_load(tiny_model_path, tmp_path, edit, message):
    """Such metadata used to load (the warm-up feeds zeros, never resizing) and then answer
    every request with a 500, or stop the CLI with a KeyError's traceback."""
    model = copy_model(tiny_model_path, tmp_path)
    data = json.loads(model.with_suffix(".json").read_text())
    edit(data)
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Model.load(model)


def test_every_interpolation_name_the_metadata_allows_has_a_pillow_filter():
    from yogapose import imaging
    from yogapose.metadata import INTERPOLATIONS

    assert set(imaging._RESAMPLE) == set(INTERPOLATIONS)


def test_input_dtype_mismatch_is_refused(tiny_model_path, tmp_path):
    model = copy_model(tiny_model_path, tmp_path)
    data = json.loads(model.with_suffix(".json").read_text())
    data["input"]["dtype"] = "uint8"
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match="input dtype float32 does not match"):
        Model.load(model)


def test_label_count_mismatch_is_refused(tiny_model_path, tmp_path):
    model = copy_model(tiny_model_path, tmp_path)
    edit_metadata(model, labels=["a", "b", "c", "d", "e"])
    with pytest.raises(RuntimeError, match="6 outputs but the metadata lists 5 labels"):
        Model.load(model)


def test_missing_files_are_clear_errors(tiny_model_path, tmp_path):
    with pytest.raises(RuntimeError, match="model file not found"):
        Model.load(tmp_path / "nope.tflite")
    lonely = tmp_path / "lonely.tflite"
    shutil.copyfile(tiny_model_path, lonely)
    with pytest.raises(RuntimeError, match="metadata not found"):
        Model.load(lonely)
    with pytest.raises(ValueError, match="num_threads"):
        Model.load(tiny_model_path, num_threads=0)


def test_wrong_input_array_shape_is_refused(tiny_model_path):
    model = Model.load(tiny_model_path)
    with pytest.raises(ValueError, match="expects"):
        model.predict(np.zeros((1, 224, 224, 3), np.float32))


def test_in_place_fill_matches_predict_and_survives_a_failing_fill(tiny_model_path):
    model = Model.load(tiny_model_path)
    x = np.random.default_rng(1).uniform(-1, 1, model.input_shape).astype(np.float32)
    expected = model.predict(x)

    def boom(buf):
        buf[...] = 0.5
        raise ValueError("fill failed")

    with pytest.raises(ValueError) as info:
        model.predict_with(boom)
    kept = info.value  # a caller holding on to the exception must not block later invokes
    got = model.predict_with(lambda buf: np.copyto(buf, x))
    np.testing.assert_array_equal(got, expected)
    assert kept is not None


THREADS_PROBE = """
import os, sys
from yogapose.runtime import Model
before = len(os.listdir("/proc/self/task"))
model = Model.load(sys.argv[1], num_threads=int(sys.argv[2]))  # keep it alive
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to count threads")
def test_thread_setting_is_honoured(tiny_model_path):
    """XNNPACK starts ``num_threads - 1`` worker threads: count them in a fresh process."""
    extra = {}
    for n in (1, 3):
        out = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(tiny_model_path), str(n)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
        extra[n] = int(out.stdout.strip().splitlines()[-1])
    assert extra[3] - extra[1] == 2, extra


# ------------------------------------------------------------------ quantization


def test_quantization_helper_with_explicit_params():
    q = Quantization(scale=1 / 128, zero_point=0, dtype=np.dtype(np.int8))
    x = np.array([-1.0, -0.5, 0.0, 0.25, 0.99, 2.0, -3.0], np.float32)
    ints = q.quantize(x)
    assert ints.dtype == np.int8
    assert ints.tolist() == [-128, -64, 0, 32, 127, 127, -128]  # saturates at the range
    np.testing.assert_allclose(q.dequantize(ints)[:5], [-1.0, -0.5, 0.0, 0.25, 127 / 128])
    u = Quantization(scale=1 / 256, zero_point=0, dtype=np.dtype(np.uint8))  # softmax output style
    np.testing.assert_allclose(u.dequantize(np.array([0, 128, 255], np.uint8)), [0.0, 0.5, 255 / 256])
    with pytest.raises(RuntimeError, match="without quantization parameters"):
        Quantization.of({"name": "x", "dtype": np.int8, "quantization": (0.0, 0)})
    assert Quantization.of({"name": "x", "dtype": np.float32}) is None


@pytest.fixture(scope="module")
def int8_and_float(tiny_int8_path, tiny_model_path) -> tuple[Path, Path]:
    """One Keras model converted twice (committed, see tests/tinymodel.py): full-integer
    int8 (int8 input and output tensors) and plain float32, each with its metadata."""
    return tiny_int8_path, tiny_model_path


@pytest.fixture(scope="module")
def int8_model(int8_and_float) -> Path:
    return int8_and_float[0]


def test_int8_model_takes_floats_and_returns_probabilities(int8_and_float):
    qmodel = Model.load(int8_and_float[0])
    fmodel = Model.load(int8_and_float[1])
    assert qmodel.quantized_input and qmodel.quantized_output
    assert qmodel.input_dtype == np.int8
    rng = np.random.default_rng(5)
    agree = 0
    for _ in range(8):
        x = smooth_image(rng)
        pq, pf = qmodel.predict(x), fmodel.predict(x)
        assert pq.dtype == np.float32 and pq.shape == (6,)
        assert pq.min() >= 0.0 and pq.sum() == pytest.approx(1.0, abs=0.03)
        assert np.abs(pq - pf).max() < 0.05
        agree += int(pq.argmax() == pf.argmax())
    assert agree >= 7


def test_int8_model_through_the_app(int8_model, images):
    from tests.conftest import b64
    from yogapose.app import get_app
    from yogapose.config import Settings

    app = get_app(Settings(model_path=int8_model))
    result = app.handle({"image": b64(images["jpeg"])})
    assert list(result) == list(app.labels)
    assert sum(result.values()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("field, value", [("color_mode", "L"), ("exif_transpose", False)])
def test_preprocessing_the_server_cannot_honour_is_refused(tiny_model_path, tmp_path, field, value):
    model = copy_model(tiny_model_path, tmp_path)
    data = json.loads(model.with_suffix(".json").read_text())
    data["preprocessing"][field] = value
    model.with_suffix(".json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=field):
        Model.load(model)
