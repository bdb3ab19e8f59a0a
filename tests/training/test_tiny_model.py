"""The committed tiny test models are what ``python -m tests.tinymodel`` makes.

Regenerating must give models with the same signature (tensors, dtypes, quantization) and
the same metadata apart from the digest, and the float model must compute the same
function; otherwise the committed files are stale and must be regenerated. Bytes are not
compared: another TensorFlow release may lay the flatbuffer out differently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.tinymodel import INT8_NAME, TINY_DIR, TINY_NAME, generate, smooth_image
from yogapose.metadata import load_metadata, sha256_file
from yogapose.runtime import Model

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    generate(out)
    return out


def signature(path: Path) -> list[tuple]:
    """(shape, dtype, (scale, zero point)) of every input and output tensor."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    details = interp.get_input_details() + interp.get_output_details()
    return [(tuple(d["shape"]), np.dtype(d["dtype"]).name, tuple(round(float(q), 6) for q in d["quantization"]))
            for d in details]


@pytest.mark.parametrize("name", [TINY_NAME, INT8_NAME])
def test_regenerating_gives_the_committed_signature_and_metadata(regenerated: Path, name: str) -> None:
    committed, fresh = TINY_DIR / name, regenerated / name
    assert committed.stat().st_size < 16 * 1024  # kilobytes, not a real network
    assert load_metadata(committed).sha256 == sha256_file(committed)  # the committed pair matches
    old = json.loads(committed.with_suffix(".json").read_text())
    new = json.loads(fresh.with_suffix(".json").read_text())
    old.pop("sha256"), new.pop("sha256")
    assert new == old, "committed metadata is stale: run `python -m tests.tinymodel`"
    assert signature(fresh) == signature(committed)


def test_regenerated_float_model_computes_the_same_function(regenerated: Path) -> None:
    committed, fresh = Model.load(TINY_DIR / TINY_NAME), Model.load(regenerated / TINY_NAME)
    rng = np.random.default_rng(11)
    for _ in range(4):
        x = smooth_image(rng)
        np.testing.assert_allclose(fresh.predict(x), committed.predict(x), atol=1e-5)
