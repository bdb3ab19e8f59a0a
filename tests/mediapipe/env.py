"""Build (once per machine) the side venv holding the pinned ``mediapipe`` wheel.

Why a side venv: mediapipe is a 400 MB stack pinned to protobuf 4 and numpy 1, which must
never meet the project venv or the image; the tests only need it as a reference.

Exact pins, installed with ``--no-deps``: mediapipe's declared dependencies include jax,
jaxlib and sounddevice, which ``mediapipe.solutions`` never imports (+~250 MB and ~1 min);
the list below is what ``import mediapipe`` + the pose solution need, with versions fixed so
that the reference does not drift between machines. OpenCV is the headless build: the
default one needs libGL, absent on servers and CI images.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".tools" / "mediapipe-venv"
MEDIAPIPE = "mediapipe==0.10.14"
PACKAGES = (
    MEDIAPIPE,
    "absl-py==2.5.1",
    "attrs==26.1.0",
    "flatbuffers==25.12.19",
    "numpy==1.26.4",  # the wheel's extensions were built against numpy 1
    "opencv-contrib-python-headless==4.10.0.84",
    "protobuf==4.25.9",  # mediapipe 0.10.14: >=4.25.3,<5
    # matplotlib, imported by mediapipe.solutions.drawing_utils, and its dependencies
    "matplotlib==3.11.2",
    "contourpy==1.3.3",
    "cycler==0.12.1",
    "fonttools==4.69.1",
    "kiwisolver==1.5.1",
    "packaging==26.4",
    "pillow==13.0.0",
    "pyparsing==3.3.3",
    "python-dateutil==4.0.0",
)
_STAMP = ".yogapose-packages"  # the package list the venv was built with
_PROBE = "import mediapipe, mediapipe.python.solutions.pose; assert mediapipe.__version__ == '0.10.14'"


def _is_py312(path: str | Path) -> bool:
    try:
        out = subprocess.run([str(path), "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def find_python312() -> str | None:
    """A CPython 3.12 (the wheel is cp312), searched as ``.ci/setup`` does, this one first."""
    candidates: list[str] = []
    if sys.version_info[:2] == (3, 12):
        candidates.append(getattr(sys, "_base_executable", sys.executable))
    on_path = shutil.which("python3.12")
    if on_path:
        candidates.append(on_path)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted((str(p) for p in pyenv_root.glob("versions/3.12*/bin/python3.12")), reverse=True)
    candidates += ["/usr/local/bin/python3.12", "/usr/bin/python3.12"]
    return next((c for c in candidates if Path(c).exists() and _is_py312(c)), None)


def _ready(venv: Path) -> bool:
    py = venv / "bin" / "python"
    stamp = venv / _STAMP
    if not py.exists() or not stamp.exists() or stamp.read_text() != "\n".join(PACKAGES):
        return False
    return subprocess.run([str(py), "-c", _PROBE], capture_output=True, timeout=120, check=False).returncode == 0


def ensure_venv(venv: Path = VENV, log=print) -> tuple[Path | None, str]:
    """-> (the side venv's python, or None; a status line saying why / how long it took).

    Idempotent and safe against a concurrent build (a lock file); a half-built venv is
    built again in a scratch directory and only renamed into place when complete.
    """
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(venv):
            return venv / "bin" / "python", f"reuse {venv}"
        base = find_python312()
        if base is None:
            return None, "no CPython 3.12 found (the mediapipe 0.10.14 wheel is cp312)"
        scratch = venv.with_name(venv.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"building {venv} with {base} ({MEDIAPIPE}, one-off, ~30-60 s)")
        t0 = time.monotonic()
        pip = [str(scratch / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               "--no-deps", "--only-binary", ":all:"]
        try:
            subprocess.run([base, "-m", "venv", str(scratch)], check=True, capture_output=True, timeout=300)
            subprocess.run([*pip, *PACKAGES], check=True, capture_output=True, text=True, timeout=900)
        except subprocess.CalledProcessError as exc:
            tail = str(exc.stderr or "").strip().splitlines()[-3:]
            return None, f"building the mediapipe venv failed: {' | '.join(tail) or exc}"
        except subprocess.TimeoutExpired as exc:
            return None, f"building the mediapipe venv timed out ({exc.cmd[0]})"
        (scratch / _STAMP).write_text("\n".join(PACKAGES))
        # A venv's scripts hold absolute paths; only bin/python (a symlink to the base
        # interpreter, which finds pyvenv.cfg next to it) is used, and it survives the move.
        shutil.rmtree(venv, ignore_errors=True)
        scratch.rename(venv)
        if not _ready(venv):
            return None, f"{venv} was built but `{_PROBE}` fails in it"
        return venv / "bin" / "python", f"built {venv} in {time.monotonic() - t0:.0f} s"


if __name__ == "__main__":
    py, status = ensure_venv()
    print(status)
    sys.exit(0 if py else 1)
