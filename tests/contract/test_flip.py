"""The test-time flip (``preprocessing.flip_below_margin``): a crop the model is unsure of is
classified mirrored too, and the answer is for the average of the two outputs.

The real LiteRT interpreter on the committed tiny model (its outputs depend on where colours
sit in the image, so a mirrored input gives other outputs), with the margin in a metadata
copy set to always (1.0) or never (0.0) flip; which crops count as unsure is
``tests/unit/test_answer.py``'s.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from tests.conftest import image_bytes
from yogapose.app import App
from yogapose.config import load_settings
from yogapose.observability import RequestStats
from yogapose.runtime import Model


def with_margin(src: Path, folder: Path, margin: float) -> Model:
    folder.mkdir()
    dst = folder / src.name
    shutil.copyfile(src, dst)
    data = json.loads(src.with_suffix(".json").read_text())
    data["preprocessing"]["flip_below_margin"] = margin
    dst.with_suffix(".json").write_text(json.dumps(data))
    return Model.load(dst)


def test_an_unsure_crop_is_answered_with_the_mean_of_it_and_its_mirror(tiny_model_path, tmp_path):
    photo = image_bytes("PNG", size=(300, 200))  # a block left of centre: not mirror-symmetric
    always = App(load_settings(), with_margin(tiny_model_path, tmp_path / "always", 1.0))
    x = always.preprocessor.tensor(photo, always.settings.max_pixels)
    plain, mirrored = always.model.predict(x), always.model.predict(np.ascontiguousarray(x[:, :, ::-1]))
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the mirror is a second view

    stats = RequestStats()
    ans = always.classify(photo, stats)
    assert stats.flipped == 1
    np.testing.assert_allclose(ans.outputs, (plain + mirrored) / 2, atol=1e-6)
    assert abs(sum(ans.probabilities.values()) - 1.0) < 1e-6

    never = App(load_settings(), with_margin(tiny_model_path, tmp_path / "never", 0.0))
    stats = RequestStats()
    ans = never.classify(photo, stats)
    assert stats.flipped == 0
    np.testing.assert_allclose(ans.outputs, plain, atol=1e-6)
