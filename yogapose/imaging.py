"""Decoding untrusted image bytes and turning them into the model's input tensor.

Training (``convert/``) calls the same functions, so training and serving feed the network
identical tensors for the same image (tested in ``tests/unit/test_preprocess_parity.py``).

Decoding is bounded in work, memory and time, whatever the bytes claim:

* **Pixels**: at most ``max_pixels``, and sides within :data:`MAX_ASPECT_RATIO` of each
  other, from the header, before any decoder runs.
* **Work**: a JPEG's marker segments are walked before decoding; more than
  :data:`MAX_JPEG_SCANS` scans (each one a pass over every block) or
  :data:`MAX_JPEG_SEGMENTS` segments is refused, as are RLE-compressed BMPs over
  :data:`MAX_BMP_RLE_BYTES` (Pillow decodes those in Python). Every other format decodes in
  time linear in its bytes, and every read Pillow makes (header parsing loops included) passes a clock
  check: :data:`DECODE_BUDGET_S` per image, or less when the request's deadline is nearer.
* **Memory**: the image is reduced as soon as it is decoded (JPEG: libjpeg's draft scaling
  while decoding; then integer box reduction in strips, with the colour conversion and
  alpha compositing done per strip), never below the ``draft_size`` the caller needs, so no
  full-resolution copy is made after the decode itself. Decodes whose own buffers would be
  too big are refused from the header: multi-scan JPEGs over :data:`MAX_JPEG_COEF_BYTES` of
  coefficients, WebP over :data:`MAX_WEBP_PIXELS`.
"""

from __future__ import annotations

import io
import math
import re
import struct
import time
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import formats
from .deadline import Deadline
from .errors import PayloadTooLarge, UnsupportedImage, UnusableImage
from .metadata import Preprocessing

# Smallest side we accept: a 1x1 or 2x2 "image" carries no pose.
MIN_SIDE = 8
# Scans in one JPEG. Encoders write 1 (baseline), 6 (libjpeg's progressive greyscale), 10
# (its colour script), 18 (CMYK) and mozjpeg's optimised scripts stay in that range; the
# format allows more only for contrived files. Each scan is a pass over every block of its
# components (~5 ms at 40 MP here), so 64 scans cost ~0.3 s while a few hundred KB can hold
# thousands of them (one end-of-band run per scan), which took 10 s and more.
MAX_JPEG_SCANS = 64
# Marker segments besides scans (APPn, DQT, DHT, COM, ...). Real files have tens; a split ICC
# profile or XMP adds a few hundred at most. 10 MB of 4-byte COM segments would keep
# Pillow's marker loop busy for ~2 s.
MAX_JPEG_SEGMENTS = 1024
# A JPEG with more than one scan (progressive, or sequential non-interleaved) is decoded into
# a whole-image coefficient buffer (2 bytes per coefficient, 64 per block) whatever the draft
# scale; 4:4:4 colour at 40 MP would need 240 MB. This caps it (40 MP 4:2:0 needs 120 MB).
MAX_JPEG_COEF_BYTES = 160 * 1024 * 1024
# libwebp keeps its own full-size canvas next to Pillow's copy of the frame (and lossless
# decoding a third buffer): ~16 bytes per pixel at the peak (250 MB measured at 16 MP).
# 12.5 MP passes every 12 MP phone photo (4032 x 3024) and keeps that under 200 MB.
MAX_WEBP_PIXELS = 12_500_000
# Pillow decodes RLE-compressed BMPs in Python, ~1 s per MB of runs (10 MB of one-pixel runs:
# 10 s). Real RLE BMPs are small drawings; photos are stored uncompressed.
MAX_BMP_RLE_BYTES = 1 << 20
# Longer side / shorter side. Photos, panoramas included, stay far below it; past it an image
# is a strip with no pose in it, and the reduction (which keeps the shorter side at least the
# model's size) would keep the whole long side: an 8 x 5,000,000 PNG peaked at ~570 MB. At
# 20:1 and a shorter side under 2 x 300 px (no reduction) the image is at most ~7 MP.
MAX_ASPECT_RATIO = 20
# Wall-clock bound for decoding one image (the request's deadline may cut it shorter). A
# 40 MP PNG decodes in ~1 s on one Lambda vCPU; linear-time hostile files (10 MB of tiny
# PNG chunks or GIF sub-blocks) take ~2 s.
DECODE_BUDGET_S = 4.0
# Bytes Pillow feeds its decoders per call, i.e. how often the clock is checked while decoding.
_DECODE_CHUNK = 16 * 1024
# Pixels converted per strip while reducing (a few MB of temporaries).
_STRIP_PIXELS = 1 << 21

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
# Modes whose transparency is a colour key (PNG tRNS) or a palette index (GIF, PNG).
_KEYED_MODES = frozenset({"P", "RGB", "L", "1"})

# Pillow's own bomb check warns at 89 MP and raises at 2x that; we enforce our own, lower,
# configurable cap from the header *before* decoding, so disable the global one's warning.
Image.MAX_IMAGE_PIXELS = None


class _OutOfTime(Exception):
    """Raised from inside Pillow by :class:`_TimedBytes`; deliberately none of the exception
    types Pillow catches and re-labels."""


class _TimedBytes(io.BytesIO):
    """The image bytes, refusing to be read once ``expires`` has passed.

    Pillow parses headers and feeds its decoders through ``read()``, so every parsing loop
    of a plugin and every decoder chunk passes this clock check.
    """

    def __init__(self, data: bytes, expires: float) -> None:
        super().__init__(data)  # shares the bytes object, no copy
        self.expires = expires

    def read(self, size: int | None = -1, /) -> bytes:
        if time.monotonic() >= self.expires:
            raise _OutOfTime
        return super().read(size)


def open_image(
    data: bytes,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    deadline: Deadline | None = None,
    jpeg_draft: bool = True,
) -> Image.Image:
    """Decode bytes into an upright 8-bit RGB image, refusing bombs and unsupported formats.

    ``draft_size`` is the smallest size the caller needs (both sides, upright): the image
    is reduced early to no less than that (libjpeg's DCT scaling for JPEG when
    ``jpeg_draft``, then an integer box reduction), which bounds memory and is several
    times faster than a full decode followed by a resize. ``None`` keeps full resolution.
    Transparent pixels are composited on ``background`` (the metadata's alpha_background).
    Decoding stops at ``deadline`` (:class:`~yogapose.deadline.DeadlineExceeded`) or after
    :data:`DECODE_BUDGET_S` (:class:`~yogapose.errors.UnusableImage`).
    """
    if not data:
        raise UnsupportedImage("empty body: no image bytes were sent")
    fmt = formats.sniff(data)
    if fmt is None:
        raise UnsupportedImage(f"not a supported image (allowed: {formats.NAMES})")
    if fmt is formats.JPEG:
        check_jpeg_structure(data)
    elif fmt is formats.BMP:
        _check_bmp_structure(data)
    deadline = deadline or Deadline.never()
    deadline.check("decoding the image")
    budget_end = time.monotonic() + DECODE_BUDGET_S
    src = _TimedBytes(data, min(budget_end, deadline.expires))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "palette images with transparency"
            try:
                img = Image.open(src, formats=(fmt.pillow,))
            except UnidentifiedImageError:
                raise UnsupportedImage(f"not a readable {fmt.label} image") from None
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                raise UnsupportedImage(f"cannot read image header: {_short(exc)}") from None
            _check_size(img, fmt, max_pixels)
            orientation = _orientation(img) if fmt is formats.JPEG else 1
            if draft_size is not None and jpeg_draft and fmt is formats.JPEG:
                # Must happen before load(); picks the largest DCT scale still >= draft_size.
                img.draft("RGB", _stored_size(draft_size, orientation))
            key_scale = _low_bit_grey_scale(img)
            try:
                img.decodermaxblock = _DECODE_CHUNK
                img.load()
                if key_scale > 1 and isinstance(img.info.get("transparency"), int):
                    img.info["transparency"] *= key_scale
                orientation = _orientation(img)  # PNG may keep eXIf after the pixel data
                rgb = _reduce_to_rgb(img, _stored_size(draft_size, orientation), background, src.expires)
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
                raise UnusableImage(f"image data is corrupt or truncated: {_short(exc)}") from None
            except MemoryError:
                raise PayloadTooLarge("image too large to decode") from None
    except _OutOfTime:
        deadline.check("the image was decoded")
        raise UnusableImage(
            f"decoding the image took longer than {DECODE_BUDGET_S:g} s; "
            "the file is too large or too complex"
        ) from None
    method = _TRANSPOSE.get(orientation)
    return rgb.transpose(method) if method is not None else rgb


def _low_bit_grey_scale(img: Image.Image) -> int:
    """1, or what Pillow multiplies 2- and 4-bit grey PNG pixels by (85, 17) when it widens
    them to 8 bits: their tRNS colour key stays in the file's scale and must follow."""
    tiles = getattr(img, "tile", None)  # an ImageFile's, before load()
    tile = tiles[0] if img.mode == "L" and tiles else None
    args = getattr(tile, "args", None) if tile is not None else None
    raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
    return {"L;2": 85, "L;4": 17}.get(raw, 1) if isinstance(raw, str) else 1


def _check_size(img: Image.Image, fmt: formats.ImageFormat, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise UnusableImage(
            f"image has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    if fmt is formats.WEBP and width * height > MAX_WEBP_PIXELS:
        raise UnusableImage(
            f"WebP image has {width}x{height} = {width * height} pixels, over the WebP limit of "
            f"{MAX_WEBP_PIXELS} (its decoder needs several full-size buffers); send a JPEG"
        )
    if min(width, height) < MIN_SIDE:
        raise UnusableImage(f"image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UnusableImage(
            f"image is {width}x{height}, longer than {MAX_ASPECT_RATIO}:1; crop it to the person"
        )


def _orientation(img: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8; 1 when absent or unreadable."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError, EOFError, struct.error):
        return 1  # a broken EXIF block is no reason to refuse the picture
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _stored_size(upright: tuple[int, int] | None, orientation: int) -> tuple[int, int] | None:
    """``upright`` as a size of the stored (not yet transposed) image."""
    if upright is None or orientation < 5:  # 5-8 swap width and height
        return upright
    return (upright[1], upright[0])


def _reduce_to_rgb(img: Image.Image, min_size: tuple[int, int] | None,
                   background: tuple[int, int, int], expires: float) -> Image.Image:
    """Any decoded mode -> 8-bit RGB, box-reduced by the largest integer factor that keeps
    both sides >= ``min_size``.

    Works in horizontal strips, so besides the decoded image only the reduced result and a
    few MB of temporaries exist (a 40 MP RGBA picture used to take three more full copies).
    Conversion happens before reduction within a strip: compositing and 16-bit scaling see
    full-resolution pixels, exactly as when converting the whole image first.
    """
    width, height = img.size
    factor = 1
    if min_size is not None:
        factor = max(1, min(width // max(1, min_size[0]), height // max(1, min_size[1])))
    if factor == 1 and img.mode == "RGB" and "transparency" not in img.info:
        return img
    peak = _sixteen_bit_peak(img)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(1, _STRIP_PIXELS // (width * factor)) * factor
    for top in range(0, height, rows):
        if time.monotonic() >= expires:
            raise _OutOfTime
        strip = _to_rgb(img.crop((0, top, width, min(height, top + rows))), background, peak)
        if factor > 1:
            strip = strip.reduce(factor)
        out.paste(strip, (0, top // factor))
    return out


def _sixteen_bit_peak(img: Image.Image) -> float:
    """The value that maps to 255 for 16/32-bit greyscale (a whole-image property)."""
    mode = img.mode
    if mode.startswith("I;16"):
        return 65535.0
    if mode in ("I", "F"):
        high = img.getextrema()[1]
        return 65535.0 if isinstance(high, (int, float)) and high > 255 else 255.0
    return 255.0


def _to_rgb(img: Image.Image, background: tuple[int, int, int], peak: float = 255.0) -> Image.Image:
    """Palette, alpha, greyscale, 16-bit and CMYK images -> 8-bit RGB.

    Transparency is composited on ``background`` (white for this model, as its training
    data was).
    """
    mode = img.mode
    keyed = mode in _KEYED_MODES and "transparency" in img.info  # a tRNS colour key (or GIF index)
    if mode == "RGB" and not keyed:
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16-bit greyscale PNGs: scale to 8 bits instead of clipping at 255 (float32 on a
        # strip; float64 copies of a whole 40 MP image once took 1 GB).
        raw = np.asarray(img)
        arr = raw.astype(np.float32)
        arr *= np.float32(255.0 / peak)
        arr += np.float32(0.5)
        np.clip(arr, 0, 255, out=arr)
        rgb = Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
        key = img.info.get("transparency")
        if isinstance(key, int):  # a 16-bit tRNS key: those pixels are transparent too
            rgb.paste(background, mask=Image.fromarray((raw == key).astype(np.uint8) * 255, "L"))
        return rgb
    if mode in _ALPHA_MODES or keyed:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    # CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, L, 1, P without transparency.
    return img.convert("RGB")


def _check_bmp_structure(data: bytes) -> None:
    """Refuse RLE-compressed BMPs (compression 1 or 2 in a BITMAPINFOHEADER or later) over
    :data:`MAX_BMP_RLE_BYTES`; Pillow reports anything malformed itself."""
    if len(data) >= 34 and int.from_bytes(data[14:18], "little") >= 40:
        compression = int.from_bytes(data[30:34], "little")
        if compression in (1, 2) and len(data) > MAX_BMP_RLE_BYTES:
            raise UnusableImage(
                f"RLE-compressed BMP of {len(data)} bytes is over the limit of {MAX_BMP_RLE_BYTES} "
                "for that encoding (it decodes slowly); send a PNG or JPEG"
            )


# ----------------------------------------------------------------------- JPEG structure

# A marker at a segment boundary, after optional fill bytes (anchored, so linear).
_MARKER = re.compile(rb"\xff+([\x01-\xfe])")
# The marker ending a scan's entropy-coded data: 0xFF not followed by a stuffed zero, a
# restart marker or more fill. No repetition in the pattern: a run of 0xFF must not make
# the search quadratic.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def check_jpeg_structure(data: bytes) -> None:
    """Walk a JPEG's marker segments (not its pixels) and refuse files whose structure
    promises unbounded decoding work or memory (see the module docstring).

    Anything merely malformed is left to libjpeg, which reports it when decoding.
    """
    pos = 2
    scans = segments = coef_bytes = 0
    while (segment := _next_segment(data, pos)) is not None:
        marker, body, pos = segment
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise UnusableImage(
                f"JPEG has more than {MAX_JPEG_SEGMENTS} marker segments; refused as too costly to parse"
            )
        if marker in _SOF:
            coef_bytes = _coefficient_bytes(data[body:pos])
        if marker != 0xDA:  # SOS
            continue
        scans += 1
        if scans > MAX_JPEG_SCANS:
            raise UnusableImage(
                f"JPEG has more than {MAX_JPEG_SCANS} scans; real encoders write at most a few "
                "dozen, so it is refused as too costly to decode"
            )
        if scans == 2 and coef_bytes > MAX_JPEG_COEF_BYTES:
            raise UnusableImage(
                f"progressive JPEG would need {-(-coef_bytes // 2**20)} MB to decode, over the limit of "
                f"{MAX_JPEG_COEF_BYTES // 2**20} MB; send a baseline JPEG or fewer pixels"
            )
        end = _SCAN_END.search(data, pos)
        if end is None:
            return
        pos = end.start()


def _next_segment(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(marker, payload start, end) of the segment at ``pos``; None at EOI or anything odd.
    Standalone markers (RSTn, TEM) are skipped."""
    while (m := _MARKER.match(data, pos)) is not None:
        marker, pos = m.group(1)[0], m.end()
        if marker == 0xD9:  # EOI
            return None
        if marker in _STANDALONE:
            continue
        length = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 > len(data) or length < 2:
            return None
        return marker, pos + 2, pos + length
    return None


def _coefficient_bytes(sof: bytes) -> int:
    """Size of libjpeg's whole-image coefficient buffer for this frame header (0 if malformed)."""
    if len(sof) < 6:
        return 0
    height, width, ncomp = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big"), sof[5]
    comps = [(sof[7 + 3 * i] >> 4, sof[7 + 3 * i] & 15) for i in range(ncomp) if 8 + 3 * i <= len(sof)]
    if not comps:
        return 0
    hmax = max(h for h, _ in comps) or 1
    vmax = max(v for _, v in comps) or 1
    blocks = 0
    for h, v in comps:
        bw = math.ceil(math.ceil(width * h / hmax) / 8)
        bh = math.ceil(math.ceil(height * v / vmax) / 8)
        blocks += (-(-bw // max(h, 1)) * max(h, 1)) * (-(-bh // max(v, 1)) * max(v, 1))
    return blocks * 64 * 2


# ------------------------------------------------------------------------- model input


def resize_image(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize to the model's input size (aspect ratio not kept, like Keras ``load_img``)."""
    size = (int(prep.size[0]), int(prep.size[1]))
    if img.size == size:
        return img
    return img.resize(size, _resample(prep))


def _resample(prep: Preprocessing) -> Image.Resampling:
    return _RESAMPLE[prep.interpolation]  # one of metadata.INTERPOLATIONS: checked at load


def resize_square(img: Image.Image, square: tuple[float, float, float], prep: Preprocessing) -> Image.Image:
    """The square ``(cx, cy, half)`` of ``img`` at the model's input size, proportions kept:
    the part inside the image is resized as :func:`resize_image` would, the part outside is
    filled by repeating the image's edge pixels (a neutral continuation of the scene, not a
    border the classifier could read as a cue)."""
    width, height = img.size
    cx, cy, half = square
    sq = (math.floor(cx - half), math.floor(cy - half), math.ceil(cx + half), math.ceil(cy + half))
    box = (max(0, sq[0]), max(0, sq[1]), min(width, sq[2]), min(height, sq[3]))
    if box == sq:
        return resize_image(img.crop(box), prep)
    out_w, out_h = int(prep.size[0]), int(prep.size[1])
    kx, ky = out_w / (sq[2] - sq[0]), out_h / (sq[3] - sq[1])
    x0 = min(out_w - 1, max(0, round((box[0] - sq[0]) * kx)))
    y0 = min(out_h - 1, max(0, round((box[1] - sq[1]) * ky)))
    x1 = max(x0 + 1, min(out_w, round((box[2] - sq[0]) * kx)))
    y1 = max(y0 + 1, min(out_h, round((box[3] - sq[1]) * ky)))
    inner = img.crop(box).resize((x1 - x0, y1 - y0), _resample(prep))
    pixels = np.pad(np.asarray(inner, dtype=np.uint8), ((y0, out_h - y1), (x0, out_w - x1), (0, 0)), mode="edge")
    return Image.fromarray(pixels, "RGB")


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


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
