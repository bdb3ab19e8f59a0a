"""The serving scaling is Keras' Xception convention (the network was trained with it)."""

from __future__ import annotations

import numpy as np
import pytest

from convert.data import scale
from tests.unit.test_preprocess_parity import PREP, _photo


def test_scaling_is_keras_xception_convention() -> None:
    """Our scaling equals keras.applications.xception.preprocess_input on the same pixels."""
    xception = pytest.importorskip("keras.applications.xception", reason="training extras (keras) not installed")
    pixels = np.asarray(_photo((150, 150)), dtype=np.float32)[None]
    ours = scale(pixels, PREP)
    theirs = np.asarray(xception.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
