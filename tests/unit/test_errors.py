"""The README's error table is yogapose/errors.py: every typed error, its code and status."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from yogapose import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_rows() -> set[tuple[int, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("| status | `code` | exception (direct invoke) | when |", 1)[1].split("\n\n", 1)[0]
    rows = {(int(m[1]), m[2], m[3]) for m in re.finditer(r"^\| (\d{3}) \| `(\w+)` \| `(\w+)` \|", section, re.M)}
    assert rows, "no error table found in README.md"
    return rows


def test_readme_error_table_is_the_typed_errors() -> None:
    # Subclasses that only refine a documented error (e.g. WrongMethod adds the Allow list)
    # live elsewhere; errors.py holds one class per code.
    typed = {(cls.http_status, cls.code, name) for name, cls in inspect.getmembers(errors, inspect.isclass)
             if issubclass(cls, errors.PoseError) and cls.__module__ == errors.__name__}
    assert readme_rows() == typed


def test_codes_are_unique() -> None:
    """A client tells errors apart by code alone."""
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.PoseError)]
    assert len({c.code for c in classes}) == len(classes)
