"""Reading a ``<split>/<class>/<image>`` tree into arrays, through the serving decoder.

Images are decoded and resized with ``yogapose.imaging`` (the exact code the Lambda runs),
so a training example and a served request for the same file are the same tensor.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yogapose.imaging import load_resized
from yogapose.metadata import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
# Training images are small; the cap only guards against a stray huge file.
_MAX_PIXELS = 100_000_000


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
        raise SystemExit(f"no class folders under {split_dir}")
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


def to_uint8(path: Path, prep: Preprocessing) -> np.ndarray:
    """One file -> (H, W, 3) uint8 at the model's input size, exactly as served."""
    return np.asarray(load_resized(path.read_bytes(), prep, _MAX_PIXELS), dtype=np.uint8)


def load_split(split_dir: Path, class_names: list[str], prep: Preprocessing) -> ImageSet:
    items = list_images(split_dir, class_names)
    if not items:
        raise SystemExit(f"no images under {split_dir}")
    w, h = prep.size
    images = np.empty((len(items), h, w, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        images[i] = to_uint8(path, prep)
    labels = np.array([c for _, c in items], dtype=np.int64)
    return ImageSet(images, labels, [p for p, _ in items], class_names)


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
        row = rows.get(Path(f).resolve().relative_to(root).as_posix())
        out[i] = row is not None and row.get("synthetic") == "1"
    return out
