"""Reading a ``<split>/<class>/<image>`` tree into arrays, through the serving preprocessing.

Images are decoded, person-cropped and resized with ``yogapose.preprocess`` (the exact code
the Lambda runs), so a training example and a served request for the same file are the same
tensor. Out-of-scope images (``../shared/data/negatives``) join as one extra class,
:data:`OUTLIER_LABEL`, which the server never shows in the six-key answer.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from yogapose import formats
from yogapose.metadata import Preprocessing
from yogapose.person import PersonBox
from yogapose.preprocess import Preprocessor

# The serving decoder's file name extensions: the one image-format table (yogapose.formats).
IMAGE_SUFFIXES = formats.EXTENSIONS
# Training images are small; the cap only guards against a stray huge file.
_MAX_PIXELS = 100_000_000
# The out-of-scope class: trained as a seventh output, never part of the six-key answer.
OUTLIER_LABEL = "other"
DEFAULT_MODEL_DIR = Path("model")  # where the person detector file is (localtools/assets.py)


@dataclass
class ImageSet:
    """Resized uint8 images (N, H, W, 3), integer labels and the files they came from."""

    images: np.ndarray
    labels: np.ndarray
    files: list[Path]
    class_names: list[str]


def class_names_of(split_dir: Path) -> list[str]:
    """Class folders in sorted order: this order becomes the model's output order."""
    names = sorted(p.name for p in Path(split_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise FileNotFoundError(f"no class folders under {split_dir}")
    return names


def list_images(split_dir: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    items: list[tuple[Path, int]] = []
    for idx, name in enumerate(class_names):
        folder = Path(split_dir) / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                items.append((f, idx))
    return items


_PREPROCESSORS: dict[tuple[Preprocessing, str], Preprocessor] = {}


def preprocessor(prep: Preprocessing, model_dir: Path = DEFAULT_MODEL_DIR) -> Preprocessor:
    """The serving preprocessor for ``prep`` (one detector per process)."""
    key = (prep, str(model_dir))
    if key not in _PREPROCESSORS:
        _PREPROCESSORS[key] = Preprocessor.for_model(prep, model_dir, num_threads=2)
    return _PREPROCESSORS[key]


def open_upright(path: Path, prep: Preprocessing) -> Image.Image:
    """One file -> upright RGB, decoded exactly as served (before the person crop)."""
    return preprocessor(prep).decode(Path(path).read_bytes(), _MAX_PIXELS)


def to_uint8(path: Path, prep: Preprocessing) -> np.ndarray:
    """One file -> (H, W, 3) uint8 at the model's input size, exactly as served."""
    return np.asarray(preprocessor(prep).from_bytes(Path(path).read_bytes(), _MAX_PIXELS).image, dtype=np.uint8)


def frame_uint8(img: Image.Image, prep: Preprocessing) -> tuple[np.ndarray, PersonBox | None]:
    """Upright RGB -> (model-size uint8, the person region found or None)."""
    framed = preprocessor(prep).frame(img)
    return np.asarray(framed.image, dtype=np.uint8), framed.person


def negative_items(split_dir: Path, label: int) -> list[tuple[Path, int]]:
    """Every image of a negatives split (``<category>/<id>.jpg``), all with ``label``."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        return []
    cats = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    return [(f, label) for f, _ in list_images(split_dir, cats)]


def load_split(split_dir: Path, class_names: list[str], prep: Preprocessing,
               extra: list[tuple[Path, int]] | None = None) -> ImageSet:
    """A split's images through the serving preprocessing (+ ``extra`` items, e.g. negatives)."""
    items = list_images(split_dir, class_names) + list(extra or [])
    if not items:
        raise FileNotFoundError(f"no images under {split_dir}")
    w, h = prep.size
    images = np.empty((len(items), h, w, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        images[i] = to_uint8(path, prep)
    labels = np.array([c for _, c in items], dtype=np.int64)
    return ImageSet(images, labels, [p for p, _ in items], class_names)


def paste(img: Image.Image, scene: Image.Image, frame: tuple[int, int], height_fraction: float,
          rng: np.random.Generator) -> Image.Image:
    """``img`` scaled to ``height_fraction`` of a ``frame``-sized copy of ``scene``, at a random
    place: what a photo taken from a few metres away looks like. Used by the training's scale
    augmentation and by the framing-robustness evaluation alike."""
    return paste_placed(img, scene, frame, height_fraction, rng)[0]


def paste_placed(img: Image.Image, scene: Image.Image, frame: tuple[int, int], height_fraction: float,
                 rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """:func:`paste`, and where ``img`` went: (left, top, right, bottom) in the frame."""
    fw, fh = frame
    canvas = scene.convert("RGB").resize((fw, fh), Image.Resampling.BILINEAR)
    h = max(8, round(fh * height_fraction))
    w = max(8, round(img.width * h / img.height))
    if w > fw:
        w, h = fw, max(8, round(img.height * fw / img.width))
    x = int(rng.integers(0, fw - w + 1))
    y = int(rng.integers(0, fh - h + 1))
    canvas.paste(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR), (x, y))
    return canvas, (x, y, x + w, y + h)


def placed_region(person: PersonBox | None, original: tuple[int, int], placed: tuple[int, int, int, int],
                  frame: tuple[int, int] | None = None) -> PersonBox:
    """The person region found on an original photo, carried to where :func:`paste_placed`
    put that photo (the whole pasted photo when no person was found on it).

    With ``frame`` (the composed image's size) the person's square before it was clipped to
    the original is carried over too, and the region is that square clipped to the frame: on
    a wide shot the crop takes in some of the scene around the photo, as the server's crop
    of a correctly found person does. Without it, the region clipped to the original photo.
    """
    if person is None:
        return PersonBox(*placed, score=0.0)
    x0, y0, x1, y1 = placed
    kx, ky = (x1 - x0) / original[0], (y1 - y0) / original[1]
    if frame is not None and person.square is not None:
        cx, cy, half = person.square
        cx, cy, hx, hy = x0 + cx * kx, y0 + cy * ky, half * kx, half * ky
        return PersonBox(max(0, int(np.floor(cx - hx))), max(0, int(np.floor(cy - hy))),
                         min(frame[0], int(np.ceil(cx + hx))), min(frame[1], int(np.ceil(cy + hy))),
                         person.score, (cx, cy, (hx + hy) / 2))
    return PersonBox(int(np.floor(x0 + person.left * kx)), int(np.floor(y0 + person.top * ky)),
                     int(np.ceil(x0 + person.right * kx)), int(np.ceil(y0 + person.bottom * ky)), person.score)


def crop_uint8(img: Image.Image, region: PersonBox, prep: Preprocessing) -> np.ndarray:
    """``img`` framed on ``region`` as served (:meth:`Preprocessor.crop`) -> model-size uint8."""
    return np.asarray(preprocessor(prep).crop(img, region).image, dtype=np.uint8)


def scale(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8/float [0, 255] -> float32 network input, same formula as the server."""
    x = np.asarray(images, dtype=np.float32) / np.float32(prep.scale_divisor)
    x += np.float32(prep.scale_offset)
    return x


def file_sha256(path: Path) -> str | None:
    if not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(data_dir: Path) -> dict[str, dict[str, str]]:
    """``manifest.csv`` rows keyed by relative file path (``val/tree/x.jpg``); {} if absent."""
    path = Path(data_dir) / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def synthetic_mask(data_dir: Path, files: list[Path]) -> np.ndarray:
    """True where ``manifest.csv`` marks a file as a CGI render; all False without a manifest."""
    rows = read_manifest(data_dir)
    root = Path(data_dir).resolve()
    out = np.zeros(len(files), dtype=bool)
    for i, f in enumerate(files):
        path = Path(f).resolve()
        if not path.is_relative_to(root):
            continue  # e.g. a negative from another folder: a real image
        row = rows.get(path.relative_to(root).as_posix())
        out[i] = row is not None and row.get("synthetic") == "1"
    return out
