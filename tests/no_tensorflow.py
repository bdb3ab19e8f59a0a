"""pytest plugin: TensorFlow and Keras cannot be imported, as in an image without ``[train]``.

    .venv/bin/python -m pytest -p tests.no_tensorflow tests/unit tests/contract

``.ci/run`` runs the serving tiers this way, which proves they need no training stack even
though the dev venv has one installed. The block covers the Python processes tests start
as well (the CLI, the local server): a ``sitecustomize`` on ``PYTHONPATH`` installs it there.
Tests that use Keras on purpose skip through ``pytest.importorskip`` (the blocker raises
``ModuleNotFoundError``, as a missing package does).
"""

from __future__ import annotations

import importlib.abc
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

BLOCKED = frozenset({"tensorflow", "keras", "tf_keras", "tensorflow_cpu", "tensorboard"})
_SITECUSTOMIZE = """\
import importlib.util
spec = importlib.util.spec_from_file_location("_no_tensorflow", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.install()
"""


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by tests.no_tensorflow)",
                                      name=fullname)
        return None


def install() -> None:
    """Block the imports in this process (idempotent)."""
    if not any(isinstance(f, _Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocker())


def pytest_configure(config: pytest.Config) -> None:
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if loaded:
        import pytest

        raise pytest.UsageError(f"tests.no_tensorflow: already imported before the blocker: {loaded[:5]}")
    install()
    # Child Pythons (python -m yogapose ..., servers) read PYTHONPATH: block there too.
    site_dir = Path(tempfile.mkdtemp(prefix="no-tensorflow-"))
    config.add_cleanup(lambda: shutil.rmtree(site_dir, ignore_errors=True))
    (site_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(path=str(Path(__file__).resolve())))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site_dir), os.environ.get("PYTHONPATH")) if p)
