"""Figures the model card prints next to a recall: the Wilson interval (convert/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from convert.evaluate import Metrics, wilson_interval


def test_wilson_interval_matches_the_published_formula_and_stays_in_0_1():
    # 34 of 39 (the chair val photos): Wilson 95 % interval, computed by hand from
    # (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
    lo, hi = wilson_interval(34, 39)
    assert lo == pytest.approx(0.7329, abs=1e-4)
    assert hi == pytest.approx(0.9440, abs=1e-4)
    assert wilson_interval(39, 39)[1] == 1.0 and wilson_interval(39, 39)[0] < 1.0
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 5)[1] > 0.0
    assert all(np.isnan(wilson_interval(0, 0)))


def test_the_recall_table_prints_each_class_interval():
    table = Metrics(["a", "b", "c"], np.array([[34, 5, 0], [0, 10, 0], [0, 0, 0]])).table("Real photos")
    recall_table = table.split("Confusion matrix")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in recall_table.splitlines() if line.startswith("| ")}
    assert "0.73-0.94" in rows["a"]
    assert "0.72-1.00" in rows["b"]
    assert rows["c"].split(" | ")[3] == "-"
