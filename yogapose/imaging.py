"""Decoding untrusted image bytes and turning them into the model's input tensor.

Training (``convert/``) calls the same functions, so training and serving feed the network
identical tensors for the same image (tested in ``tests/unit/test_preprocess_parity.py``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PayloadTooLarge, UnsupportedImage, UnusableImage
from .metadata import Preprocessing

# Formats we decode. Everything else (SVG, PDF, TIFF, PSD, ICO, ...) is refused before
# any decoder runs: Image.open() only probes these plugins.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
MIME_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}
# Smallest side we accept: a 1x1 or 2x2 "image" carries no pose.
MIN_SIDE = 8

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Pillow's own bomb check warns at 89 MP and raises at 2x that; we enforce our own, lower,
# configurable cap from the header *before* decoding, so disable the global one's warning.
Image.MAX_IMAGE_PIXELS = None


def open_image(
    data: bytes,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode bytes into an upright RGB image, refusing bombs and unsupported formats.

    Transparent pixels are composited on ``background`` (the metadata's alpha_background).

    ``draft_size`` lets libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale (never below
    that size), which is several times faster than a full decode followed by a resize.
    """
    if not data:
        raise UnsupportedImage("empty body: no image bytes were sent")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage(
            "not a supported image (allowed: JPEG, PNG, WebP, BMP, GIF)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnsupportedImage(f"cannot read image header: {_short(exc)}") from None

    width, height = img.size
    if width * height > max_pixels:
        raise UnusableImage(
            f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    if min(width, height) < MIN_SIDE:
        raise UnusableImage(f"image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} is needed")

    if draft_size is not None and img.format == "JPEG":
        # Must happen before load(); picks the largest DCT scale still >= draft_size.
        img.draft("RGB", draft_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "palette images with transparency"
            img.load()
            img = _to_rgb(img, background)
            img = ImageOps.exif_transpose(img) or img
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UnusableImage(f"image data is corrupt or truncated: {_short(exc)}") from None
    except MemoryError:
        raise PayloadTooLarge("image too large to decode") from None
    return img


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Palette, alpha, greyscale, 16-bit and CMYK images -> 8-bit RGB.

    Transparency is composited on ``background`` (white for this model, as its training
    data was).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16-bit greyscale PNGs: scale to 8 bits instead of clipping at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    # CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, L, 1, P without transparency.
    return img.convert("RGB")


def resize_image(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize to the model's input size (aspect ratio not kept, like Keras ``load_img``)."""
    try:
        resample = _RESAMPLE[prep.interpolation]
    except KeyError:
        raise ValueError(f"unknown interpolation {prep.interpolation!r}") from None
    if img.size == tuple(prep.size):
        return img
    return img.resize(tuple(prep.size), resample)


def load_resized(data: bytes, prep: Preprocessing, max_pixels: int) -> Image.Image:
    """Bytes -> upright RGB image at the model's input size."""
    draft = tuple(prep.size) if prep.jpeg_draft else None
    img = open_image(data, max_pixels=max_pixels, draft_size=draft,  # type: ignore[arg-type]
                     background=prep.alpha_background)
    return resize_image(img, prep)


def to_input_array(img: Image.Image, prep: Preprocessing, out: np.ndarray | None = None) -> np.ndarray:
    """Resized RGB image -> float32 NHWC batch of one, scaled as ``x / divisor + offset``.

    Writes into ``out`` (shape (1, H, W, 3)) when given, so the interpreter's input buffer
    can be filled without an extra temporary.
    """
    pixels = np.asarray(img, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise UnusableImage("image is not 3-channel RGB after conversion")
    if out is None:
        out = np.empty((1,) + pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(prep.scale_divisor), out=out[0], dtype=np.float32)
    out += np.float32(prep.scale_offset)
    return out


def preprocess_bytes(data: bytes, prep: Preprocessing, max_pixels: int) -> np.ndarray:
    """The whole serving preprocessing: bytes -> (1, H, W, 3) float32 in [-1, 1]."""
    return to_input_array(load_resized(data, prep, max_pixels), prep)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
