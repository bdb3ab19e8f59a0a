"""The bench's input images: one real photo and two generated ones, written under build/.

* ``photo-300.jpg``: a real validation photo (~300 px), copied byte for byte.
* ``phone-12mp.jpg``: a validation photo upscaled to 4000x3000 plus sensor-like noise, JPEG q=90, stored sideways
  with EXIF Orientation=6 like a phone held upright: the worst case we expect per request.
* ``alpha.png``: an RGBA PNG (the photo with a transparent border), the alpha-compositing path.
* ``wide-nobody.jpg``: the first ``no_person`` val photo of ``../shared/data/negatives`` (a dog) at
  1200x900, JPEG q=90: nobody for the detector to find, so every window pass runs (the person
  crop's worst case: 1 + 6 + 12 detector invokes), and the answer is "no person".

Nothing from ``../shared`` is ever committed: the files are rebuilt on demand.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = (REPO / ".." / "shared" / "data" / "yoga").resolve()
NEGATIVES = (REPO / ".." / "shared" / "data" / "negatives").resolve()
OUT = REPO / "build" / "bench" / "images"
IMAGE_NAMES = ("photo-300.jpg", "phone-12mp.jpg", "alpha.png", "wide-nobody.jpg")


def _manifest_rows(split: str = "val", root: Path = DATA) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def val_photos(n: int) -> list[Path]:
    """``n`` validation photos, spread over the classes, in a fixed order."""
    rows = sorted(_manifest_rows(), key=lambda r: (r["cls"], r["file"]))
    by_cls: dict[str, list[Path]] = {}
    for r in rows:
        by_cls.setdefault(r["cls"], []).append(DATA / r["file"])
    picked: list[Path] = []
    i = 0
    while len(picked) < n and any(i < len(v) for v in by_cls.values()):
        for files in by_cls.values():
            if i < len(files) and len(picked) < n:
                picked.append(files[i])
        i += 1
    return picked


def _pick_sources() -> tuple[Path, Path]:
    """(a real ~300 px photo, the largest real photo) from the validation split."""
    rows = [r for r in _manifest_rows() if r["synthetic"] == "0" and r["file"].endswith(".jpg")]
    rows.sort(key=lambda r: r["file"])
    small = next(r for r in rows if 280 <= max(int(r["width"]), int(r["height"])) <= 320)
    large = max(rows, key=lambda r: (int(r["width"]) * int(r["height"]), r["file"]))
    return DATA / small["file"], DATA / large["file"]


def ensure_images(out: Path = OUT) -> dict[str, Path]:
    """Create the images if missing; return name -> path."""
    from PIL import Image, ImageChops

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in IMAGE_NAMES}
    if all(p.exists() for p in paths.values()):
        return paths
    small_src, large_src = _pick_sources()
    shutil.copyfile(small_src, paths["photo-300.jpg"])

    with Image.open(large_src) as src:
        upright = src.convert("RGB").resize((3000, 4000), Image.Resampling.BICUBIC)
    # An upscaled photo is unnaturally smooth (a tiny file that decodes fast); sensor-like
    # noise brings the file to a phone's ~3-4 MB, so entropy decoding costs what it would.
    noise = Image.effect_noise(upright.size, 6).convert("RGB")
    upright = ImageChops.add(upright, noise, scale=1.0, offset=-128)
    # Store the pixels rotated so that Orientation=6 (rotate 90 CW to display) shows them upright.
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # 4000x3000 as stored by a phone
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "bench"  # Make
    sideways.save(paths["phone-12mp.jpg"], "JPEG", quality=90, exif=exif.tobytes())

    with Image.open(small_src) as src:
        rgba = src.convert("RGBA")
    w, h = rgba.size
    alpha = Image.new("L", (w, h), 0)
    alpha.paste(255, (w // 10, h // 10, w - w // 10, h - h // 10))
    rgba.putalpha(alpha)
    rgba.save(paths["alpha.png"], "PNG")

    scenes = sorted(r["file"] for r in _manifest_rows("val", NEGATIVES)
                    if r["category"] == "no_person" and r["kind"] == "photo")
    with Image.open(NEGATIVES / scenes[0]) as src:
        wide = src.convert("RGB").resize((1200, 900), Image.Resampling.BICUBIC)
    wide.save(paths["wide-nobody.jpg"], "JPEG", quality=90)
    return paths


if __name__ == "__main__":
    for name, path in ensure_images().items():
        print(name, path, path.stat().st_size)
