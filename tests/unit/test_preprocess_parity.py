"""Training and serving must feed the network the same tensor for the same image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert.data import load_split, scale, to_uint8
from yogapose.metadata import Preprocessing
from yogapose.preprocess import Preprocessor


def preprocess_bytes(data: bytes, prep: Preprocessing, max_pixels: int) -> np.ndarray:
    """The serving preprocessing (no person crop in these metadata)."""
    return Preprocessor(prep).tensor(data, max_pixels)

PREP = Preprocessing()
MAX_PIXELS = 40_000_000


def _photo(size=(640, 480)) -> Image.Image:
    """A structured (not flat) test image, so interpolation differences would show."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 3 % 256)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _jpeg_with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _png_rgba(img: Image.Image) -> bytes:
    rgba = img.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, : rgba.size[0] // 3] = 0  # a transparent band
    rgba.putalpha(Image.fromarray(alpha, "L"))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,payload",
    [
        ("jpeg", lambda: _jpeg_with_orientation(_photo(), 1)),
        ("jpeg-exif-rotated", lambda: _jpeg_with_orientation(_photo(), 6)),
        ("png-alpha", lambda: _png_rgba(_photo((300, 200)))),
        ("large-jpeg-draft", lambda: _jpeg_with_orientation(_photo((2400, 1800)), 8)),
    ],
)
def test_training_and_serving_tensors_match(tmp_path: Path, name: str, payload) -> None:
    data = payload()
    split = tmp_path / "train" / "tree"
    split.mkdir(parents=True)
    (split / f"{name}.img").write_bytes(data)  # suffix irrelevant for to_uint8
    train_tensor = scale(to_uint8(split / f"{name}.img", PREP)[None], PREP)
    serve_tensor = preprocess_bytes(data, PREP, MAX_PIXELS)
    assert train_tensor.shape == serve_tensor.shape == (1, 150, 150, 3)
    assert train_tensor.dtype == serve_tensor.dtype == np.float32
    np.testing.assert_allclose(train_tensor, serve_tensor, rtol=0, atol=1e-6)
    assert serve_tensor.min() >= -1.0 and serve_tensor.max() <= 1.0


def test_exif_orientation_is_applied() -> None:
    """A portrait phone photo stored landscape + Orientation=6 must arrive upright."""
    img = _photo((400, 200))
    upright = preprocess_bytes(_jpeg_with_orientation(img.transpose(Image.Transpose.ROTATE_90), 1), PREP, MAX_PIXELS)
    rotated = preprocess_bytes(_jpeg_with_orientation(img, 6), PREP, MAX_PIXELS)
    unrotated = preprocess_bytes(_jpeg_with_orientation(img, 1), PREP, MAX_PIXELS)
    # Orientation 6 means "rotate 90 clockwise to display"; Pillow's ROTATE_90 is counter-
    # clockwise, so compare against ROTATE_270 of the stored pixels.
    expected = preprocess_bytes(_jpeg_with_orientation(img.transpose(Image.Transpose.ROTATE_270), 1), PREP, MAX_PIXELS)
    assert np.abs(rotated - expected).mean() < 0.02
    assert np.abs(rotated - unrotated).mean() > 0.1
    assert np.abs(rotated - upright).mean() > 0.1


def test_training_loader_uses_serving_decoder(tmp_path: Path) -> None:
    for cls in ("chair", "tree"):
        d = tmp_path / cls
        d.mkdir()
        (d / "a.jpg").write_bytes(_jpeg_with_orientation(_photo((320, 240)), 6))
    s = load_split(tmp_path, ["chair", "tree"], PREP)
    assert s.images.shape == (2, 150, 150, 3) and s.images.dtype == np.uint8
    served = preprocess_bytes((tmp_path / "tree" / "a.jpg").read_bytes(), PREP, MAX_PIXELS)
    np.testing.assert_allclose(scale(s.images[1:2], PREP), served, atol=1e-6)
    assert list(s.labels) == [0, 1]


def test_alpha_background_comes_from_the_metadata() -> None:
    """Transparent pixels take the metadata's alpha_background, not a hard-coded colour."""
    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), (10, 200, 30, 0)).save(buf, "PNG")
    white = preprocess_bytes(buf.getvalue(), PREP, MAX_PIXELS)
    black = preprocess_bytes(buf.getvalue(), Preprocessing(alpha_background=(0, 0, 0)), MAX_PIXELS)
    np.testing.assert_allclose(white, 1.0, atol=1e-6)
    np.testing.assert_allclose(black, -1.0, atol=1e-6)


def _reference(data: bytes) -> np.ndarray:
    """What the model card promises, written with plain Pillow and numpy (Keras's
    ``load_img(target_size=(150, 150))`` with bilinear resizing, then Xception's
    ``x / 127.5 - 1``): alpha on white, RGB, no aspect ratio kept."""
    img = Image.open(io.BytesIO(data)).convert("RGBA")
    white = Image.new("RGBA", img.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, img).convert("RGB").resize((150, 150), Image.Resampling.BILINEAR)
    return (np.asarray(rgb, np.float32) / 127.5 - 1.0)[None]


def test_the_tensor_is_what_an_independent_reference_computes() -> None:
    """Training and serving share Preprocessor, so the parity test above cannot catch a bug
    in it; this compares with code that shares nothing with it."""
    small = _png_rgba(_photo((300, 200)))  # no box reduction first: the same resize, exactly
    np.testing.assert_allclose(preprocess_bytes(small, PREP, MAX_PIXELS), _reference(small), atol=1e-6)
    yy, xx = np.mgrid[0:960, 0:1280]  # smooth: the two resamplers differ only at fine detail
    smooth = np.stack([xx * 255 // 1280, yy * 255 // 960, (xx + yy) * 255 // 2240], -1).astype(np.uint8)
    big = _png_rgba(Image.fromarray(smooth, "RGB"))  # box-reduced by 6 before the resize: close, not equal
    diff = np.abs(preprocess_bytes(big, PREP, MAX_PIXELS) - _reference(big))
    assert diff.mean() < 0.01 and diff.max() < 0.25, (diff.mean(), diff.max())  # max: the alpha band's edge
