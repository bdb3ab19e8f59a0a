"""Conversion, verification, evaluation and shipping on a tiny model built in the test.

Runs the real TFLite converter and the real LiteRT interpreter; skipped (with the reason)
only where the training extras (TensorFlow) are not installed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert import convert as conv
from convert import evaluate as ev
from convert import pipeline
from tests.tinymodel import LABELS, build_keras_tiny
from yogapose.metadata import Preprocessing, load_metadata, sha256_file

tf = pytest.importorskip("tensorflow",
                         reason="training extras (tensorflow) not installed: pipenv sync --categories train")

PREP = Preprocessing()


def _image(seed: int, size=(200, 160)) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """train/<class>/ and val/<class>/ with a manifest marking every 3rd val image as CGI."""
    root = tmp_path_factory.mktemp("yoga")
    rows = []
    seed = 0
    for split, n in (("train", 4), ("val", 3)):
        for cls in LABELS:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                seed += 1
                (d / f"{i}.jpg").write_bytes(_image(seed))
                rows.append({"file": f"{split}/{cls}/{i}.jpg", "cls": cls, "split": split,
                             "synthetic": "1" if (split == "val" and i == 2) else "0"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "cls", "split", "synthetic"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def keras_model():
    return build_keras_tiny(seed=3)


@pytest.fixture(scope="module")
def val(dataset, keras_model):
    x, y = conv.load_val_inputs(dataset / "val", list(LABELS), PREP)
    return x, y, np.asarray(keras_model.predict(x, verbose=0))


@pytest.mark.parametrize("variant", conv.VARIANTS)
def test_convert_verify_and_metadata(tmp_path, dataset, keras_model, val, variant):
    x, _, probs = val
    rep = None
    if variant == "full_int8":
        sample = conv.sample_train_images(dataset / "train", list(LABELS), PREP, 12, seed=0)
        rep = conv.representative_from(sample, PREP)
    out = tmp_path / f"m-{variant}.tflite"
    meta = conv.convert_and_verify(keras_model, variant, out, list(LABELS), PREP, x, probs, rep,
                                   min_agreement=0.8, extra={"training": {"manifest_sha256": "abc"}})
    assert out.is_file() and out.stat().st_size > 1000
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk["sha256"] == sha256_file(out) == meta.sha256
    assert on_disk["labels"] == list(LABELS)
    assert on_disk["input"] == {"shape": [1, 150, 150, 3], "dtype": "float32", "layout": "NHWC"}
    assert on_disk["quantization"] == variant
    assert on_disk["preprocessing"]["scale"]["divisor"] == 127.5
    assert on_disk["preprocessing"]["resize"]["interpolation"] == "bilinear"
    assert on_disk["verification"]["images"] == len(x)
    assert on_disk["verification"]["top1_agreement"] >= 0.8
    assert "ai-edge-litert" in on_disk["versions"] and "keras" in on_disk["versions"]
    assert on_disk["training"]["manifest_sha256"] == "abc"
    if variant == "float32":
        assert on_disk["verification"]["max_abs_prob_diff"] < 1e-4
    # the metadata round-trips through the server's reader
    assert load_metadata(out).labels == LABELS


def test_disagreeing_model_is_refused_and_not_written(tmp_path, keras_model, val):
    x, _, probs = val
    wrong = np.roll(probs, 1, axis=1)  # every top-1 moves to another class
    out = tmp_path / "refused.tflite"
    with pytest.raises(conv.VerificationError, match="agreement"):
        conv.convert_and_verify(keras_model, "float32", out, list(LABELS), PREP, x, wrong)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert list(tmp_path.iterdir()) == []


def test_evaluate_reports_real_and_cgi_and_plots(tmp_path, dataset, keras_model, val):
    x, y, probs = val
    out = tmp_path / "m.tflite"
    conv.convert_and_verify(keras_model, "float32", out, list(LABELS), PREP, x, probs)
    result = ev.evaluate(out, dataset / "val")
    assert result["all"]["images"] == 18 and result["real"]["images"] == 12 and result["cgi"]["images"] == 6
    cm = np.array(result["all"]["confusion"])
    assert cm.shape == (6, 6) and cm.sum(1).tolist() == [3] * 6
    # the serving path reproduces the Keras predictions' accuracy on the same files
    assert int(np.trace(cm)) == int((probs.argmax(1) == y).sum())
    assert result["all"]["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()), abs=1e-4)
    plot = tmp_path / "cm.png"
    ev.plot_confusion(result, plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = ev.report(result)
    assert "Real photos" in text and "CGI renders" in text and "| chair |" in text


def test_evaluate_rejects_unknown_class_folder(tmp_path, keras_model, val):
    x, _, probs = val
    out = tmp_path / "m.tflite"
    conv.convert_and_verify(keras_model, "float32", out, list(LABELS), PREP, x, probs)
    (tmp_path / "data" / "lotus").mkdir(parents=True)
    with pytest.raises(ValueError, match="lotus"):
        ev.evaluate(out, tmp_path / "data")


def test_choose_prefers_smallest_within_half_a_point():
    def e(acc, rec, size):
        return {"real": {"accuracy": acc, "macro_recall": rec}, "model": {"bytes": size}}

    evals = {"float32": e(0.95, 0.94, 80), "float16": e(0.948, 0.938, 40),
             "dynamic_int8": e(0.94, 0.93, 20), "full_int8": e(0.951, 0.90, 20)}
    name, why = pipeline.choose(evals)
    assert name == "float16" and "float16" in why
    evals["dynamic_int8"] = e(0.946, 0.936, 20)
    assert pipeline.choose(evals)[0] == "dynamic_int8"


def test_pipeline_ships_exactly_one_model(tmp_path, dataset, keras_model):
    keras_path = tmp_path / "tiny.keras"
    keras_model.save(keras_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "old.tflite").write_bytes(b"stale")
    code = pipeline.main(["--data", str(dataset), "--keras", str(keras_path), "--build", str(tmp_path / "build"),
                          "--model-dir", str(model_dir), "--variants", "float32,float16", "--calibration-images", "12"])
    assert code == 0
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "confusion.png", "yoga-pose.json",
                                                           "yoga-pose.tflite"]
    meta = json.loads((model_dir / "yoga-pose.json").read_text())
    assert meta["model_file"] == "yoga-pose.tflite" and meta["sha256"] == sha256_file(model_dir / "yoga-pose.tflite")
    assert {"real", "cgi", "all", "framing"} <= set(meta["validation"])
    assert meta["selection"]["why"]
    card = (model_dir / "README.md").read_text()
    assert "research and demonstration" in card and "| float16 |" in card and "Why this one ships" in card
    assert "| recall, 95 % interval |" in card

    # --remeasure: the same weights measured again through the serving code, card regenerated
    (model_dir / "README.md").write_text("stale card")
    tflite_before = (model_dir / "yoga-pose.tflite").read_bytes()
    code = pipeline.main(["--data", str(dataset), "--build", str(tmp_path / "build"), "--model-dir", str(model_dir),
                          "--remeasure"])
    assert code == 0
    assert (model_dir / "yoga-pose.tflite").read_bytes() == tflite_before
    again = json.loads((model_dir / "yoga-pose.json").read_text())
    assert again["selection"] == meta["selection"] and again["validation"]["real"] == meta["validation"]["real"]
    card = (model_dir / "README.md").read_text()
    assert "research and demonstration" in card and "| float16 |" in card


def test_refused_variant_can_be_kept_apart_for_reporting(tmp_path, keras_model, val):
    x, _, probs = val
    out = tmp_path / "model" / "m.tflite"
    rejected = tmp_path / "rejected"
    with pytest.raises(conv.VerificationError):
        conv.convert_and_verify(keras_model, "float32", out, list(LABELS), PREP, x, np.roll(probs, 1, axis=1),
                                rejected_dir=rejected)
    assert not out.exists()
    kept = json.loads((rejected / "m.json").read_text())
    assert kept["verification"]["top1_agreement"] < 0.99 and (rejected / "m.tflite").is_file()


def test_sample_weights_balance_classes_and_discount_cgi():
    from convert.train import sample_weights

    labels = np.array([0, 0, 0, 1, 1, 2])
    cgi = np.array([False, True, True, False, True, False])
    w = sample_weights(labels, cgi, 3, 0.5)
    assert w.mean() == pytest.approx(1.0)
    totals = np.bincount(labels, weights=w, minlength=3)
    assert totals == pytest.approx(np.full(3, totals[0]))  # every class weighs the same
    assert w[0] / w[1] == pytest.approx(2.0)  # a real photo counts twice a render
    # synthetic_weight 1 is plain balanced class weighting
    plain = sample_weights(labels, cgi, 3, 1.0)
    assert plain == pytest.approx(len(labels) / (3 * np.bincount(labels)[labels]))


def test_synthetic_mask_reads_the_manifest(dataset):
    from convert.data import list_images, synthetic_mask

    files = [p for p, _ in list_images(dataset / "val", list(LABELS))]
    mask = synthetic_mask(dataset, files)
    with open(dataset / "manifest.csv", newline="") as f:
        cgi = {r["file"] for r in csv.DictReader(f) if r["synthetic"] == "1"}
    assert cgi and mask.sum() == len(cgi)
    assert {p.relative_to(dataset).as_posix() for p, m in zip(files, mask, strict=True) if m} == cgi
    assert not synthetic_mask(dataset / "val", files).any()  # no manifest there: all real


def test_verification_requires_agreement_on_clear_answers_and_tolerates_near_ties():
    """A converted model may flip near-ties (any rounding does) but not a clear answer."""
    rng = np.random.default_rng(0)
    clear = np.eye(3)[rng.integers(0, 3, 200)] * 0.9 + 0.1 / 3  # margin 0.9
    ties = np.tile([0.45, 0.44, 0.11], (3, 1))  # margin 0.01
    keras = np.vstack([clear, ties])
    flipped_ties = np.vstack([clear, ties[:, [1, 0, 2]]])
    ok = conv.verify(keras, flipped_ties)
    assert ok.clear_images == 200 and ok.clear_agreement == 1.0 and ok.top1_agreement == pytest.approx(200 / 203)
    assert ok.passes(0.99, 0.5)
    flipped_clear = keras.copy()
    flipped_clear[:3] = flipped_clear[:3, [1, 2, 0]]
    bad = conv.verify(keras, flipped_clear)
    assert bad.clear_agreement == pytest.approx(197 / 200) and not bad.passes(0.99, 1.0)
    many_ties = np.vstack([clear[:100], np.tile([0.45, 0.44, 0.11], (10, 1))])
    assert not conv.verify(many_ties, np.vstack([clear[:100], np.tile([0.44, 0.45, 0.11], (10, 1))])).passes(0.99, 1.0)


def test_the_cards_reproduce_command_carries_the_runs_seed():
    assert pipeline.reproduce_line({"seed": 43}).endswith("notop.h5 --seed 43`.")
    assert "--seed" not in pipeline.reproduce_line({})
    line = pipeline.reproduce_line({"seed": 43, "flags": ["--lr-drop", "0.2", "--no-person-crop"]})
    assert line.endswith("notop.h5 --seed 43 --lr-drop 0.2 --no-person-crop`.")
    assert pipeline.reproduce_line({"seed": 43}, 0.5).endswith("--seed 43`.")  # the default gate: no flag
    assert pipeline.reproduce_line({"seed": 43}, 0.3).endswith("--seed 43 --flip-below-margin 0.3`.")


def test_a_fresh_model_dir_gets_the_person_detector_set_up_extracted(tmp_path):
    import hashlib
    from dataclasses import replace

    from yogapose.metadata import PersonCrop

    blob = b"detector flatbuffer"
    crop = PersonCrop(detector_file="det.tflite", detector_sha256=hashlib.sha256(blob).hexdigest())
    prep = replace(PREP, person_crop=crop)
    source, fresh = tmp_path / "model", tmp_path / "runs" / "x" / "model"
    with pytest.raises(SystemExit, match="localtools/assets.py"):  # nowhere yet: a clear message
        pipeline.ensure_detector(prep, fresh, source)
    source.mkdir()
    (source / "det.tflite").write_bytes(b"another file")
    with pytest.raises(SystemExit, match="neither .* holds the person detector"):  # not the pinned one
        pipeline.ensure_detector(prep, fresh, source)
    (source / "det.tflite").write_bytes(blob)
    pipeline.ensure_detector(prep, fresh, source)
    assert (fresh / "det.tflite").read_bytes() == blob
    pipeline.ensure_detector(PREP, tmp_path / "none", source)  # a model without a person crop needs none
    assert not (tmp_path / "none").exists()


def test_the_before_model_is_staged_with_the_person_detector_it_pins(tmp_path):
    """The card's 'before' column measures a copy of today's model; the server loads the
    detector from beside it, so the copy needs it too (it once failed on a fresh machine)."""
    import hashlib

    shipped = Path("model")
    meta = json.loads((shipped / "yoga-pose.json").read_text())
    crop = meta["preprocessing"]["person_crop"]
    detector = tmp_path / "elsewhere" / crop["detector_file"]
    detector.parent.mkdir()
    blob = b"a detector the test pins"
    detector.write_bytes(blob)
    crop["detector_sha256"] = hashlib.sha256(blob).hexdigest()
    (detector.parent / "yoga-pose.json").write_text(json.dumps(meta))
    (detector.parent / "yoga-pose.tflite").write_bytes(b"flatbuffer")

    copy = pipeline.stage_model(detector.parent / "yoga-pose.tflite", tmp_path / "before")
    assert copy.read_bytes() == b"flatbuffer"
    assert (copy.parent / crop["detector_file"]).read_bytes() == blob  # the one beside the model
    detector.unlink()  # not beside it, and model/ holds the real one, not this pin: a clear stop
    with pytest.raises(SystemExit, match="neither .* holds the person detector"):
        pipeline.stage_model(detector.parent / "yoga-pose.tflite", tmp_path / "again")
    if (shipped / crop["detector_file"]).is_file():  # set-up extracted it: the shipped model stages
        staged = pipeline.stage_model(shipped / "yoga-pose.tflite", tmp_path / "shipped")
        assert sha256_file(staged.parent / crop["detector_file"]) == sha256_file(shipped / crop["detector_file"])


def test_the_recipe_records_the_training_flags_that_differ_from_the_defaults():
    from convert.train import parse_args, recipe_flags

    assert recipe_flags(parse_args(["--seed", "43", "--output", "x.keras", "--cache-dir", ""])) == []
    args = parse_args(["--seed", "43", "--lr-drop", "0.2", "--epochs-finetune", "24", "--no-person-crop",
                       "--lr-finetune", "5e-5"])  # the last one is the default: not recorded
    assert recipe_flags(args) == ["--epochs-finetune", "24", "--no-person-crop", "--lr-drop", "0.2"]
    assert recipe_flags(parse_args(recipe_flags(args))) == recipe_flags(args)  # a command line again


@pytest.mark.parametrize("drop", [1.0, 0.2])
def test_phase2_lowers_the_rate_only_when_asked_and_the_val_score_stalls(drop):
    """--lr-drop: after --lr-drop-patience epochs without a better val score the rate is
    multiplied by it; the default (1) keeps the constant rate of the recipe before it."""
    import keras

    from convert.train import PHASE2_MONITOR, parse_args, phase2_callbacks

    stalled = [0.5, 0.6, 0.55, 0.58, 0.57]  # best at epoch 2, then two epochs without better

    class Scores(keras.callbacks.Callback):  # stands in for ValScores: a fixed score per epoch
        def on_epoch_end(self, epoch, logs=None):
            logs[PHASE2_MONITOR] = stalled[epoch]

    args = parse_args(["--lr-drop", str(drop), "--lr-drop-patience", "2", "--patience", "9"])
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(5e-5), loss="mse")
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: rates.append(float(model.optimizer.learning_rate)))
    model.fit(np.zeros((4, 2)), np.zeros((4, 2)), epochs=len(stalled), verbose=0,
              callbacks=[*phase2_callbacks(args, Scores(), keras.callbacks.Callback()), record])
    expected = 5e-5 if drop == 1.0 else 5e-5 * drop
    assert rates[:3] == pytest.approx([5e-5] * 3)  # epochs 1-3: improving, then one stall
    assert rates[3] == pytest.approx(expected)  # after the second epoch without a better score


def test_the_card_names_every_class_under_the_90_percent_bar_and_its_main_confusion():
    # per_class's order is the confusion matrix's (chair, tree, cobra)
    per_class = {"chair": {"recall": 0.846}, "tree": {"recall": 0.96}, "cobra": {"recall": 0.899}}
    confusion = [[33, 5, 1], [1, 48, 1], [0, 9, 80]]
    bullets = pipeline.weak_classes({"real": {"per_class": per_class, "confusion": confusion}})
    assert [b.split("**")[1] for b in bullets] == ["chair", "cobra"]
    assert "recall 0.85 on real val photos, under the 0.90 goal" in bullets[0]
    assert "confused mostly with tree" in bullets[0] and "confused mostly with tree" in bullets[1]
