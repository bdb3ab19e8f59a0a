"""yogapose.answer: which person candidate's crop the server answers for, and which crops it
is unsure of (classified mirrored too)."""

from __future__ import annotations

import dataclasses

import numpy as np

from yogapose.answer import build, most_in_scope, open_set_score, unsure
from yogapose.metadata import ModelMetadata, OpenSet, Preprocessing

LABELS = ("chair", "cobra", "downdog", "goddess", "tree", "warrior")


def meta(open_set: OpenSet | None, outlier: bool = True, activation: str = "linear") -> ModelMetadata:
    return ModelMetadata(name="t", model_file="t.tflite", sha256="0" * 64, labels=LABELS,
                         input_shape=(1, 150, 150, 3), input_dtype="float32", preprocessing=Preprocessing(),
                         output_activation=activation, outlier_label="other" if outlier else None,
                         open_set=open_set)


def logits(pose: float, other: float) -> np.ndarray:
    return np.array([pose, 0.0, 0.0, 0.0, 0.0, 0.0, other], dtype=np.float32)


def test_the_crop_most_in_scope_wins():
    m = meta(OpenSet(method="t", score="not_outlier", temperature=2.0, threshold=0.5))
    raws = [logits(3.0, 4.0), logits(2.0, -1.0), logits(5.0, 6.0)]  # the second is least 'other'
    assert most_in_scope(raws, m) == 1
    scores = [open_set_score(r, 6, "not_outlier", 2.0) for r in raws]
    assert int(np.argmax(scores)) == 1
    assert build(raws[1], m, None, False).pose == "chair"


def test_one_candidate_is_taken_as_is():
    assert most_in_scope([logits(0.0, 9.0)], meta(None)) == 0


def test_uncalibrated_outlier_model_uses_one_minus_p_other():
    raws = [logits(9.0, 9.5), logits(1.0, -3.0)]  # the first has the larger pose logit, but is 'other'
    assert most_in_scope(raws, meta(None)) == 1


def test_six_output_softmax_model_uses_the_top_probability():
    m = meta(None, outlier=False, activation="softmax")
    raws = [np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]), np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])]
    assert most_in_scope(raws, m) == 1


def test_only_crops_whose_top_two_outputs_are_close_are_unsure():
    """The flip's gate: top-two margin of the softmax at temperature 1 over all outputs (the
    calibrated temperature does not move it), against ``flip_below_margin``."""
    m = meta(OpenSet(method="t", score="max_softmax", temperature=5.0, threshold=0.5))
    m = dataclasses.replace(m, preprocessing=Preprocessing(flip_below_margin=0.5))
    assert unsure(logits(1.0, 0.9), m)  # chair vs other: a near-tie
    assert not unsure(logits(6.0, 0.0), m)  # chair, clearly
    assert unsure(np.array([2.0, 2.0, 0.0, 0.0, 0.0, 0.0, -9.0], np.float32), m)  # chair vs cobra
    assert not unsure(logits(1.0, 0.9), dataclasses.replace(m, preprocessing=Preprocessing(flip_below_margin=0.0)))
    probs = meta(None, outlier=False, activation="softmax")
    probs = dataclasses.replace(probs, preprocessing=Preprocessing(flip_below_margin=0.5))
    assert unsure(np.array([0.5, 0.3, 0.05, 0.05, 0.05, 0.05]), probs)
    assert not unsure(np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), probs)


def test_nobody_found_and_no_pose_more_likely_than_not_is_no_person():
    """A plain grey image: the outlier output does not fire (1 - P(other) is high) but the six
    are a near-uniform guess. Without a person that is no pose; with one, the open-set score
    alone decides (an unsure but in-scope answer keeps its pose)."""
    m = meta(OpenSet(method="t", score="not_outlier", temperature=1.0, threshold=0.5))
    assert m.open_set is not None and m.open_set.no_person_min_confidence == 0.5
    flat = np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0], np.float32)
    box = {"x": 0.1, "y": 0.1, "width": 0.5, "height": 0.5, "score": 0.9}
    grey = build(flat, m, None, True)
    assert (grey.pose, grey.reason) == (None, "no_person") and grey.confidence < 0.5
    assert build(flat, m, box, True).reason is None  # a person: in scope, unsure, pose kept
    assert build(flat, m, None, False).reason is None  # no detector: the score alone
    sure = build(logits(4.0, -2.0), m, None, True)
    assert (sure.pose, sure.reason) == ("chair", None) and sure.confidence >= 0.5
    # A model whose metadata predates the rule keeps its verdicts.
    old = meta(OpenSet.from_dict({"method": "t", "score": "not_outlier", "temperature": 1.0, "threshold": 0.5}))
    assert build(flat, old, None, True).reason is None
    assert OpenSet.from_dict(m.open_set.to_dict()) == m.open_set
