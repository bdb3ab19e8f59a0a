"""Calibrating the open-set verdict on val: temperature, score, threshold, and their report.

* Temperature scaling (Guo et al. 2017): one scalar T dividing the logits, fitted by
  minimising the negative log-likelihood over all val images (the six poses and the
  out-of-scope images as the outlier class), so probabilities mean what they say.
* Scores compared on val (see :class:`yogapose.metadata.OpenSet`): max softmax
  (Hendrycks & Gimpel 2017), 1 - P(outlier output) (outlier exposure as a class,
  Hendrycks et al. 2019), max logit, energy (Liu et al. 2020). The one with the lowest
  false-positive rate at 95 % in-scope acceptance wins (AUROC breaks ties).
* Threshold: the highest value that still accepts at least ``ACCEPT`` of the real in-scope
  val photos.

The verdict itself is computed by the server's own code (:func:`yogapose.answer.build`),
here as there.
"""

from __future__ import annotations

import math

import numpy as np

from yogapose.answer import open_set_score
from yogapose.metadata import OPEN_SET_SCORES, OpenSet

ACCEPT = 0.95
_T_GRID = np.exp(np.linspace(np.log(0.25), np.log(8.0), 241))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T on a fine log grid (0.25..8) with the lowest NLL (a 1-D convex problem)."""
    losses = [nll(logits, labels, float(t)) for t in _T_GRID]
    return round(float(_T_GRID[int(np.argmin(losses))]), 4)


def scores(logits: np.ndarray, n_labels: int, score: str, temperature: float) -> np.ndarray:
    """The server's score for every row (``yogapose.answer.open_set_score``)."""
    return np.array([open_set_score(row, n_labels, score, temperature) for row in np.asarray(logits)])


def threshold_for(in_scores: np.ndarray, accept: float = ACCEPT) -> float:
    """The largest threshold with ``score >= threshold`` for at least ``accept`` of them."""
    s = np.sort(np.asarray(in_scores, dtype=np.float64))[::-1]
    k = max(1, math.ceil(accept * len(s)))
    return float(s[k - 1])


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(score of a random in-scope image > that of a random out-of-scope one), ties half."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    allv = np.concatenate([a, b])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


def fpr_at(in_scores: np.ndarray, out_scores: np.ndarray, accept: float = ACCEPT) -> float:
    """Share of out-of-scope images accepted at the threshold that accepts ``accept`` in-scope."""
    return float((np.asarray(out_scores) >= threshold_for(in_scores, accept)).mean())


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| per equal-width bin, weighted."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(ok[m].mean() - conf[m].mean())
    return float(total)


def compare_scores(real_in: np.ndarray, out: np.ndarray, n_labels: int, temperature: float) -> dict[str, dict]:
    """AUROC and FPR at 95 % acceptance of every score, on real in-scope vs out-of-scope logits."""
    table = {}
    for name in OPEN_SET_SCORES:
        if name == "not_outlier" and real_in.shape[1] == n_labels:
            continue  # no outlier output
        a, b = scores(real_in, n_labels, name, temperature), scores(out, n_labels, name, temperature)
        table[name] = {"auroc": round(auroc(a, b), 4), "fpr_at_95": round(fpr_at(a, b), 4),
                       "threshold": threshold_for(a)}
    return table


def calibrate(logits: np.ndarray, labels: np.ndarray, real_in: np.ndarray, outlier: np.ndarray,
              n_labels: int, method_prefix: str) -> tuple[OpenSet, dict]:
    """Fit T on all val images, compare the scores, pick one, set its threshold.

    ``labels`` index the model's outputs (the outlier output for out-of-scope images);
    ``real_in`` / ``outlier`` are masks of the real in-scope photos and the out-of-scope
    images. Returns the :class:`OpenSet` for the metadata and the evidence for the card.
    """
    temperature = fit_temperature(logits, labels)
    table = compare_scores(logits[real_in], logits[outlier], n_labels, temperature)
    best = min(table, key=lambda k: (table[k]["fpr_at_95"], -table[k]["auroc"]))
    names = {"max_softmax": "max softmax", "not_outlier": "1 - P(other)", "max_logit": "max logit",
             "energy": "energy"}
    open_set = OpenSet(
        method=f"{method_prefix}; temperature scaling; score: {names[best]} (chosen on val by FPR at 95 % acceptance)",
        score=best, temperature=temperature, threshold=float(table[best]["threshold"]),
    )
    evidence = {"temperature": temperature, "nll_t1": round(nll(logits, labels, 1.0), 4),
                "nll_fitted": round(nll(logits, labels, temperature), 4), "scores": table, "chosen": best}
    return open_set, evidence
