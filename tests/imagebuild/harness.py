"""What the image tests share: whether this machine can build them, skip-or-fail, the function's env.

Both tests/system/test_image_build.py (x86) and tests/system/test_image_arm64.py (emulated
arm64) build the real Dockerfile on a stand-in base and call the function over loopback HTTP.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import NoReturn

import pytest

# The function's environment in every image test: the photo server is on loopback.
FUNCTION_ENV = {"ALLOW_PRIVATE_URLS": "true", "POWERTOOLS_METRICS_NAMESPACE": "YogaPoseImageTest"}


def build_problem() -> str | None:
    """None when this machine can build and run images without Docker, else why not."""
    if sys.platform != "linux":
        return "the daemonless image build needs Linux"
    if os.geteuid() != 0:
        return "buildah chroot builds here need root"
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y buildah debootstrap; .ci/run does this)"
    return None


def skip_or_fail(reason: str, what: str) -> NoReturn:
    """Skip with ``reason``; under REQUIRE_IMAGE_TEST=1 (set by CI) that skip is a failure."""
    if os.environ.get("REQUIRE_IMAGE_TEST") == "1":
        pytest.fail(f"REQUIRE_IMAGE_TEST=1 but {what} cannot run: {reason}")
    pytest.skip(reason)
