"""The serving tiers run without the training stack (``.ci/run`` proves it with this plugin)."""

from __future__ import annotations

import importlib

import pytest


def test_training_stack_cannot_be_imported_under_the_plugin(pytestconfig: pytest.Config) -> None:
    if not pytestconfig.pluginmanager.has_plugin("tests.no_tensorflow"):
        pytest.skip("run with -p tests.no_tensorflow (as .ci/run does) to block TensorFlow")
    for name in ("tensorflow", "keras", "tensorflow.lite"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


def test_child_pythons_are_blocked_too(pytestconfig: pytest.Config) -> None:
    if not pytestconfig.pluginmanager.has_plugin("tests.no_tensorflow"):
        pytest.skip("run with -p tests.no_tensorflow (as .ci/run does) to block TensorFlow")
    import subprocess
    import sys

    probe = "try:\n    import keras\nexcept ModuleNotFoundError:\n    print('blocked')"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "blocked", out.stderr[-500:]
