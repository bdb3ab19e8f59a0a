"""pytest plugin: TensorFlow and Keras cannot be imported, as in an image without ``[train]``.

    .venv/bin/python -m pytest -p tests.no_tensorflow tests/unit tests/contract

``.ci/run`` runs the serving tiers this way, which proves they need no training stack even
though the dev venv has one installed. Tests that use Keras on purpose skip through
``pytest.importorskip`` (the blocker raises ``ModuleNotFoundError``, as a missing package does).
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import pytest

BLOCKED = frozenset({"tensorflow", "keras", "tf_keras", "tensorflow_cpu", "tensorboard"})


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by tests.no_tensorflow)",
                                      name=fullname)
        return None


def pytest_configure(config: pytest.Config) -> None:
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    if loaded:
        raise pytest.UsageError(f"tests.no_tensorflow: already imported before the blocker: {loaded[:5]}")
    sys.meta_path.insert(0, _Blocker())
