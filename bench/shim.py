"""Stand-in for ``lambda_function`` while the real handler is not in the tree yet.

Only used by the bench when ``lambda_function.py`` is missing (the table then says
"shim"). It is the minimal serving path built from the lead's modules: metadata ->
``yogapose.imaging`` -> LiteRT, model loaded and warmed up at import like the real one.
"""

from __future__ import annotations

import base64

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from yogapose.config import load_settings
from yogapose.imaging import load_resized, to_input_array
from yogapose.metadata import load_metadata

SETTINGS = load_settings()
META = load_metadata(SETTINGS.model_path)
_interp = Interpreter(model_path=str(SETTINGS.model_path), num_threads=SETTINGS.num_threads)
_interp.allocate_tensors()
_IN = _interp.get_input_details()[0]["index"]
_OUT = _interp.get_output_details()[0]["index"]
_interp.set_tensor(_IN, np.zeros(META.input_shape, np.float32))
_interp.invoke()  # first-inference work (XNNPACK weight packing) during init


def predict_bytes(data: bytes) -> dict[str, float]:
    img = load_resized(data, META.preprocessing, SETTINGS.max_pixels)
    _interp.set_tensor(_IN, to_input_array(img, META.preprocessing))
    _interp.invoke()
    probs = _interp.get_tensor(_OUT)[0]
    return {label: float(p) for label, p in zip(META.labels, probs)}


def lambda_handler(event, context):
    return predict_bytes(base64.b64decode(event["image"]))
