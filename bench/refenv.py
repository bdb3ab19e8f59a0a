"""Create the reference stack's virtualenv on first use (``bench/.ref-venv``, gitignored).

The original project ran tflite-runtime 2.14 + keras-image-helper 0.0.1 on numpy 1.x;
tflite-runtime has no wheels for Python >= 3.12 and breaks on numpy 2, hence Python 3.11.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF_VENV = HERE / ".ref-venv"
REF_PACKAGES = ("tflite-runtime==2.14.0", "keras-image-helper==0.0.1", "numpy<2", "pillow")


def _is_py311(python: str) -> bool:
    probe = "import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=30, check=False).returncode == 0
    except OSError:
        return False


def find_python311(explicit: str | None = None) -> str | None:
    """``explicit``, else ``python3.11`` on PATH, a pyenv 3.11, or the system's (Debian 12).

    The same places ``.ci/setup`` looks for its Python 3.12; each candidate is run once to
    check it really is 3.11 (a pyenv shim may exist without that version installed).
    """
    if explicit:
        return explicit if _is_py311(explicit) else None
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    pyenv = sorted(pyenv_root.glob("versions/3.11*/bin/python3.11"), reverse=True)
    for cand in [shutil.which("python3.11"), *map(str, pyenv), "/usr/local/bin/python3.11", "/usr/bin/python3.11"]:
        if cand and Path(cand).exists() and _is_py311(cand):
            return cand
    return None


def _ready(py: Path) -> bool:
    if not py.exists():
        return False
    probe = "import tflite_runtime.interpreter, keras_image_helper, numpy, PIL; assert numpy.__version__ < '2'"
    return subprocess.run([str(py), "-c", probe], capture_output=True, check=False).returncode == 0


def ensure_ref_venv(python311: str | None = None, venv: Path = REF_VENV,
                    log: Callable[[str], object] = print) -> tuple[str | None, str]:
    """-> (path of the venv's python or None, human-readable status)."""
    py = venv / "bin" / "python"
    if _ready(py):
        return str(py), f"reuse {venv}"
    base = find_python311(python311)
    if base is None:
        return None, "no Python 3.11 found (pass --ref-python): reference stack skipped"
    log(f"creating reference venv {venv} with {base} (one-off, ~30 s)")
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REF_PACKAGES],
                       check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-3:] if isinstance(exc.stderr, str) else []
        return None, f"reference venv setup failed: {' | '.join(tail) or exc}"
    except subprocess.TimeoutExpired:
        return None, "reference venv setup timed out"
    if not _ready(py):
        return None, "reference venv built but tflite_runtime/keras_image_helper do not import"
    return str(py), f"created {venv}"
