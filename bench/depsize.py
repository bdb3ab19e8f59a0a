"""Installed size of a set of distributions and everything they require.

Run with the interpreter of the environment to measure (standard library only):

    python bench/depsize.py ai-edge-litert numpy pillow

Sums the files each distribution's RECORD lists (bundled shared libraries in ``*.libs``
included), over the transitive closure of ``Requires-Dist`` without optional extras, and
prints one protocol line: {"total_mb", "dists": {name: {"version", "mb"}}, "missing": [...]}.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TYPE_CHECKING = False  # read by mypy as typing.TYPE_CHECKING; no import of typing in timed workers
if TYPE_CHECKING:  # mypy checks bench/ as a package
    from importlib.metadata import Distribution
    from typing import Any

    from bench import wcommon
else:  # run as a script: bench/ is on sys.path (above)
    import wcommon

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_ok(req: str) -> bool:
    """Skip extras-only requirements; evaluate other markers when packaging is at hand."""
    if ";" not in req:
        return True
    marker = req.split(";", 1)[1]
    if "extra" in marker:
        return False
    Marker: Any  # packaging's class or the copy pip vendors (two distinct classes to mypy)
    try:
        from packaging.markers import Marker
    except ImportError:
        try:
            from pip._vendor.packaging.markers import Marker
        except ImportError:
            return True
    try:
        return Marker(marker.strip()).evaluate()
    except Exception:  # noqa: BLE001 - an unparsable marker: count the dependency
        return True


def dist_size(dist: Distribution) -> int:
    total = 0
    for f in dist.files or ():
        try:
            total += os.path.getsize(str(dist.locate_file(f)))
        except OSError:
            pass
    return total


def closure(roots: list[str]) -> dict:
    seen = {}
    missing = []
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        seen[name] = dist
        for req in dist.requires or ():
            m = _NAME.match(req)
            if m and _marker_ok(req):
                todo.append(m.group(1))
    return {"dists": seen, "missing": missing}


def main() -> int:
    res = closure(sys.argv[1:])
    dists = {n: {"version": d.version, "mb": dist_size(d) / 1e6} for n, d in sorted(res["dists"].items())}
    wcommon.emit({"roots": sys.argv[1:], "total_mb": sum(v["mb"] for v in dists.values()),
                  "dists": dists, "missing": res["missing"],
                  "python": sys.version.split()[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
