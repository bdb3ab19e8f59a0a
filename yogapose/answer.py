"""From the model's raw outputs to the answer: six probabilities and an open-set verdict.

Everything here is decided by the model metadata (:class:`~yogapose.metadata.ModelMetadata`):
the output activation, the outlier output, and the open-set score, temperature and threshold.
Nothing else in the code base hard-codes them.

* The **six-key answer** (the seed contract, unchanged): ``{label: p}`` over the six labels,
  summing to 1 — the softmax of the six logits (divided by the temperature), or for a model
  that outputs probabilities, those renormalised.
* The **detailed answer** (opt-in): ``pose`` (a label, or None when the verdict rejects the
  photo: its open-set score is below the threshold, or nobody was found in it and no pose is
  more likely than ``no_person_min_confidence``), ``confidence`` (the calibrated probability
  of that pose; for a rejected photo, of the most likely of the six), ``reason`` (None,
  ``"no_person"`` or ``"out_of_scope"``),
  ``probabilities`` (calibrated: the six sum to 1 minus the probability that the photo shows
  none of them) and ``person`` (the crop box, or None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import PoseError
from .metadata import ModelMetadata

ACCEPTED = "accepted"
NO_PERSON = "no_person"
OUT_OF_SCOPE = "out_of_scope"
VERDICTS = (ACCEPTED, NO_PERSON, OUT_OF_SCOPE)


@dataclass(frozen=True)
class Answer:
    """One classified photo, both shapes of the answer."""

    probabilities: dict[str, float]  # six keys, sum 1 (the default answer)
    calibrated: dict[str, float]  # six keys, calibrated, sum <= 1
    pose: str | None
    confidence: float
    reason: str | None
    person: dict[str, float] | None
    # The model's raw outputs for the chosen crop (logits, outlier included): evaluation and
    # calibration read them; never part of either JSON answer.
    outputs: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        return self.reason or ACCEPTED

    @property
    def top(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def detailed(self) -> dict[str, Any]:
        return {
            "pose": self.pose,
            "confidence": self.confidence,
            "reason": self.reason,
            "probabilities": self.calibrated,
            "person": self.person,
        }


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def open_set_score(logits: np.ndarray, n_labels: int, score: str, temperature: float) -> float:
    """The open-set score of one photo's logits (``n_labels`` in-scope outputs first)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if score == "max_softmax":
        return float(_softmax(z)[:n_labels].max())
    if score == "not_outlier":
        return float(1.0 - _softmax(z)[n_labels:].sum())
    if score == "max_logit":
        return float(z[:n_labels].max() * temperature)
    if score == "energy":
        inner = z[:n_labels]
        m = inner.max()
        return float(temperature * (m + np.log(np.exp(inner - m).sum())))
    raise ValueError(f"unknown open-set score {score!r}")


def unsure(raw: np.ndarray, meta: ModelMetadata) -> bool:
    """Whether the top two outputs (softmax at temperature 1 over all outputs, or the
    probabilities a softmax model gives) are closer than the metadata's
    ``flip_below_margin``: the crop is then classified mirrored too. Temperature 1, not the
    calibrated one, so which crops get the second look does not depend on the calibration
    fitted on the results."""
    margin = meta.preprocessing.flip_below_margin
    if margin <= 0.0:
        return False
    out = np.asarray(raw, dtype=np.float64).reshape(-1)
    p = _softmax(out) if meta.output_activation == "linear" else out / max(out.sum(), 1e-300)
    top2 = np.sort(p)[-2:]
    return bool(top2[1] - top2[0] < margin)


def most_in_scope(raws: list[np.ndarray], meta: ModelMetadata) -> int:
    """Which of several crops of one photo (the person candidates) to answer for: the one
    whose outputs score highest on the metadata's open-set score (the most confident
    in-scope softmax for a model without one), i.e. the crop that looks most like one of
    the six poses."""
    if len(raws) <= 1:
        return 0
    n = len(meta.labels)
    if meta.open_set is not None and meta.output_activation == "linear":
        scores = [open_set_score(r, n, meta.open_set.score, meta.open_set.temperature) for r in raws]
    elif meta.outlier_label is not None and meta.output_activation == "linear":  # not calibrated yet
        scores = [open_set_score(r, n, "not_outlier", 1.0) for r in raws]
    else:
        scores = [float(np.asarray(r, dtype=np.float64).reshape(-1)[:n].max()) for r in raws]
    return int(np.argmax(scores))


def build(raw: np.ndarray, meta: ModelMetadata, person: dict[str, float] | None,
          detector_used: bool) -> Answer:
    """Raw model outputs -> :class:`Answer`. PoseError if the model returned garbage."""
    out = np.asarray(raw, dtype=np.float64).reshape(-1)
    labels = meta.labels
    n = len(labels)
    if out.shape[0] != len(meta.outputs) or not np.all(np.isfinite(out)):
        raise PoseError("the model returned an invalid output")
    if meta.output_activation == "linear":
        temperature = meta.open_set.temperature if meta.open_set else 1.0
        full = _softmax(out / temperature)
    else:
        full = np.clip(out, 0.0, None)
        if full.sum() <= 0.0:
            raise PoseError("the model returned an invalid output")
        full /= full.sum()
    six = full[:n] / max(full[:n].sum(), 1e-300)
    probabilities = {label: float(v) for label, v in zip(labels, six, strict=True)}
    calibrated = {label: float(v) for label, v in zip(labels, full[:n], strict=True)}
    best = labels[int(np.argmax(six))]
    reason = None
    if meta.open_set is not None:
        s = open_set_score(out, n, meta.open_set.score, meta.open_set.temperature)
        nobody = detector_used and person is None
        if s < meta.open_set.threshold or (nobody and calibrated[best] < meta.open_set.no_person_min_confidence):
            reason = NO_PERSON if nobody else OUT_OF_SCOPE
    return Answer(probabilities, calibrated, None if reason else best, calibrated[best], reason, person, out)
