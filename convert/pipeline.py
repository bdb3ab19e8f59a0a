"""The whole model pipeline in one command: train -> convert (4 variants) -> evaluate -> ship.

Reproduces ``model/yoga-pose.tflite``, its metadata ``model/yoga-pose.json``, the model card
``model/README.md`` and ``model/confusion.png`` from ``../shared``::

    python -m convert.pipeline --seed 43 \
        --weights ../shared/weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5

Intermediate files (Keras model, all variants, metrics) go to ``build/`` (not committed).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from localtools.assets import copy_detector
from yogapose.metadata import ModelMetadata, Preprocessing, load_metadata, sha256_file, write_metadata

from . import train as train_mod
from .convert import (
    CLEAR_MARGIN,
    DEFAULT_MAX_DIFF,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_OVERALL_AGREEMENT,
    VARIANTS,
    VerificationError,
    convert_and_verify,
    load_keras,
    load_val_inputs,
    representative_from,
    sample_train_images,
    training_info,
)
from .data import DEFAULT_MODEL_DIR, class_names_of, file_sha256
from .evaluate import ServingPath, evaluate, framing, open_set_metrics, plot_confusion, report, wilson_interval
from .openset import calibrate

SHIP_NAME = "yoga-pose.tflite"
# The shipped variant may lose at most this much real-photo accuracy and macro recall
# against float32. One point, not less: float16/float32 weights are resident as float32
# (~87 MB more than int8 weights, 226 vs 145 MB after one request), which would push the
# worst image the limits accept past the 350 MB peak the README promises (issue 12).
MAX_ACCURACY_LOSS = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/yoga"))
    p.add_argument("--negatives", type=Path, default=Path("../shared/data/negatives"),
                   help="out-of-scope images (train/ and val/ of <category>/<images>)")
    p.add_argument("--weights", default="imagenet", help="Xception notop weights: 'imagenet' or a .h5 path")
    p.add_argument("--build", type=Path, default=Path("build"), help="where intermediate files go")
    p.add_argument("--model-dir", type=Path, default=Path("model"), help="where the shipped model goes")
    p.add_argument("--keras", type=Path, default=None, help="skip training and use this Keras model")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants to build")
    p.add_argument("--calibration-images", type=int, default=300)
    p.add_argument("--before", type=Path, default=None,
                   help="the model the card's 'before' columns measure (a .tflite with its .json beside it); "
                        "default: the one in --model-dir, i.e. today's")
    p.add_argument("--remeasure", action="store_true",
                   help="no training or conversion: measure the model already in --model-dir again through "
                        "today's serving code and regenerate its card (after a serving-side change, e.g. the "
                        "person crop policy)")
    p.add_argument("--flip-below-margin", type=float, default=None,
                   help="the served test-time flip's gate (Preprocessing.flip_below_margin; serving only, "
                        "training never flips at test time); default: the code's default")
    p.add_argument("--no-ship", action="store_true", help="build and evaluate only; leave model/ alone")
    p.add_argument("--seed", type=int, default=42)
    args, train_args = p.parse_known_args(argv)
    args.train_args = train_args  # anything else goes to convert.train (e.g. --epochs-finetune 4)
    return args


def choose(evals: dict[str, dict]) -> tuple[str, str]:
    """Smallest variant whose real-photo accuracy and macro recall are within 0.5 pt of float32."""
    ref = evals["float32"]
    key = "real" if "real" in ref else "all"
    ok = []
    for name, ev in evals.items():
        loss_acc = ref[key]["accuracy"] - ev[key]["accuracy"]
        loss_rec = ref[key]["macro_recall"] - ev[key]["macro_recall"]
        if loss_acc <= MAX_ACCURACY_LOSS and loss_rec <= MAX_ACCURACY_LOSS:
            ok.append((ev["model"]["bytes"], name))
    size, best = min(ok)
    why = (f"{best} is the smallest variant ({size / 1e6:.1f} MB) whose {key}-photo val accuracy and "
           f"macro recall are within {MAX_ACCURACY_LOSS * 100:.1f} point of float32")
    return best, why


def data_summary(data: Path) -> dict:
    path = data / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    counts = Counter((r["split"], r["cls"], "cgi" if r["synthetic"] == "1" else "real") for r in rows)
    repos = Counter(r.get("repo", "") for r in rows)
    return {"counts": {"|".join(k): v for k, v in counts.items()}, "repos": dict(repos.most_common()),
            "images": len(rows)}


def ship(chosen_path: Path, model_dir: Path, ev: dict, variants_table: list[dict], why: str) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = load_metadata(chosen_path)
    crop = meta.preprocessing.person_crop
    keep = {crop.detector_file} if crop else set()  # the person detector beside it stays
    for old in model_dir.glob("*.tflite"):
        if old.name not in keep:
            old.unlink()
    target = model_dir / SHIP_NAME
    shutil.copyfile(chosen_path, target)
    extra = dict(meta.extra)
    extra["validation"] = validation_groups(ev)
    extra["selection"] = {"why": why, "variants": variants_table}
    shipped = replace(meta, model_file=target.name, sha256=sha256_file(target), extra=extra)
    write_metadata(shipped, target)
    return target


def describe_preprocessing(meta: ModelMetadata) -> str:
    """The preprocessing in words, rendered from the metadata the server reads."""
    prep = meta.preprocessing
    w, h = prep.size
    parts = [
        "decode with Pillow" + (" (JPEG draft decoding)" if prep.jpeg_draft else ""),
        "EXIF orientation applied" if prep.exif_transpose else "EXIF orientation ignored",
        f"{prep.color_mode} (transparency composited on RGB{tuple(prep.alpha_background)})",
    ]
    crop = prep.person_crop
    if crop is not None:
        parts.append(
            f"person crop: `{crop.detector_file}` (sha256 `{crop.detector_sha256[:12]}…`, {crop.source}) on the "
            f"image decoded at >= {crop.decode_min_side} px a side; detections scoring >= {crop.min_score}, weighted "
            f"NMS at IoU {crop.nms_iou}; {crop.to_dict()['policy']}; body-circle scale {crop.scale}; windows of "
            f"{crop.tile_fraction:.0%} of the shorter side ({crop.tile_overlap:.0%} overlap) when that is "
            f">= {crop.tile_min_side} px"
            + (", a window's body kept only if its mid-hip is inside the window" if crop.hip_in_window else "")
            + (f", then windows of {crop.fine_tile_fraction:.0%} when nobody is found" if crop.fine_tile_fraction > 0
               else "")
            + f" (a pass needing more than {crop.max_windows} windows is skipped)"
            + f"; candidates {crop.candidates}, search_min_side {crop.search_min_side} px, "
            f"search_below {crop.search_below:g} (training crops are the detector's pick alone: 1 candidate); "
            + ("the square kept where it leaves the image, the image's edge pixels repeated there (proportions "
               "kept)" if crop.outside == "edge" else "the square clipped to the image (then stretched)")
        )
    parts.append(f"resize to {w}x{h} ({prep.interpolation}, aspect ratio not kept)")
    if prep.flip_below_margin > 0:
        parts.append(f"test-time flip: a crop whose top two outputs (softmax at T = 1) are less than "
                     f"{prep.flip_below_margin:g} apart is classified mirrored too, the two outputs averaged")
    parts.append(f"`x / {prep.scale_divisor} + ({prep.scale_offset})`")
    return "; ".join(parts)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def open_set_section(meta: ModelMetadata, ev: dict, before: dict | None) -> list[str]:
    os_ev = ev.get("open_set")
    if meta.open_set is None or not os_ev:
        return []
    o = meta.open_set
    b = (before or {}).get("open_set") or {}
    lines = [
        "## Open-set verdict: \"not one of the six poses\"",
        "",
        (f"**Method**: {o.method}. The server divides the logits by the temperature **T = {o.temperature}** and "
         f"accepts a photo when its **{o.score}** score is at least **{o.threshold:.6g}** (both from "
         "`yoga-pose.json`, field `open_set`); otherwise the detailed answer says `pose: null` with "
         "`reason: \"no_person\"` (the detector found nobody) or `\"out_of_scope\"`. The threshold was chosen on "
         "val so that at least 95 % of the real in-scope val photos are accepted; the six-key answer is unchanged."
         + (f" A photo in which the detector finds nobody is accepted only if, besides, its most likely pose has a "
            f"calibrated probability of at least **{o.no_person_min_confidence:g}** (`no_person_min_confidence`: "
            "with no person to look at, a model unsure among the six is not seeing a pose; a plain grey image "
            "otherwise passes the score)." if o.no_person_min_confidence > 0 else "")),
        "",
        "| measure (val, through the serving path) | today's model (before) | this model |",
        "|---|---:|---:|",
        f"| AUROC in-scope vs out-of-scope | {b.get('auroc', '–')} | {os_ev['auroc']} |",
        f"| false-positive rate at 95 % in-scope acceptance | {_pct(b.get('fpr_at_95'))} | "
        f"{_pct(os_ev['fpr_at_95'])} |",
        f"| out-of-scope images rejected | {_pct(b.get('out_of_scope_rejected'))} | "
        f"{_pct(os_ev['out_of_scope_rejected'])} |",
        f"| real in-scope photos accepted | 100 % (no verdict) | {_pct(os_ev['in_scope_accepted'])} |",
        f"| accepted and correct, macro over classes | – | {_pct(os_ev['accepted_and_correct_macro'])} |",
        f"| expected calibration error, real photos (15 bins) | {b.get('ece_real', '–')} | {os_ev['ece_real']} |",
        "",
        "Out-of-scope val images rejected, per category:",
        "",
        "| category | images | rejected | of which \"no person\" |",
        "|---|---:|---:|---:|",
    ]
    for cat, m in os_ev["per_category"].items():
        lines.append(f"| {cat} | {m['images']} | {_pct(m['rejected'])} | {_pct(m['no_person'])} |")
    lines += ["", "Real in-scope val photos, per class:", "",
              "| class | images | accepted | accepted and correct | 95 % interval |", "|---|---:|---:|---:|---:|"]
    for cls, m in os_ev["per_class"].items():
        lo, hi = wilson_interval(round(m["accepted_and_correct"] * m["images"]), m["images"])
        lines.append(f"| {cls} | {m['images']} | {_pct(m['accepted'])} | {_pct(m['accepted_and_correct'])} | "
                     f"{lo:.2f}-{hi:.2f} |")
    cal = ev.get("calibration") or {}
    if cal.get("scores"):
        lines += ["", (f"Scores compared on val at T = {cal['temperature']} (NLL {cal['nll_t1']} at T = 1, "
                       f"{cal['nll_fitted']} fitted); the lowest false-positive rate wins:"), "",
                  "| score | AUROC | FPR at 95 % acceptance |", "|---|---:|---:|"]
        for name, m in cal["scores"].items():
            mark = " (chosen)" if name == cal.get("chosen") else ""
            lines.append(f"| {name}{mark} | {m['auroc']} | {_pct(m['fpr_at_95'])} |")
    lines.append("")
    return lines


def framing_section(ev: dict, before: dict | None) -> list[str]:
    fr = ev.get("framing")
    if not fr:
        return []
    bf = (before or {}).get("framing") or {}
    labels = list(next(iter(fr.values()))["per_class_recall"])
    lines = [
        "## Framing robustness",
        "",
        ("The real val photos pasted into wider scenes (the `no_person` val negatives, seeded) at 100 %, 60 % and "
         "40 % of a 1200x900 frame's height, saved as JPEG and classified through the serving path "
         "(`python -m convert.evaluate ... --framing`). Recall is the six-key answer's top label; \"accepted and "
         "correct\" also requires the open-set verdict to accept."),
        "",
        "| person height | macro recall before | macro recall | " + " | ".join(labels)
        + " | person found | accepted and correct |",
        "|---|---:|---:|" + "---:|" * len(labels) + "---:|---:|",
    ]
    for scale, m in fr.items():
        per = " | ".join(f"{m['per_class_recall'][c]:.3f}" for c in labels)
        prev = bf.get(scale, {}).get("macro_recall")
        lines.append(f"| {scale} | {'–' if prev is None else f'{prev:.3f}'} | {m['macro_recall']:.3f} | {per} | "
                     f"{_pct(m['person_found'])} | {m['accepted_and_correct_macro']:.3f} |")
    lines.append("")
    return lines


def reproduce_line(recipe: dict, flip_below_margin: float = Preprocessing.flip_below_margin) -> str:
    """The card's one command that trains this model again: the run's seed is part of it
    (runs of the same recipe differ by a few points on the smallest class), and so is every
    flag set apart from the defaults: training's (``convert.train.recipe_flags``) and the
    pipeline's own serving setting, the test-time flip's gate."""
    seed = recipe.get("seed")
    flags = list(recipe.get("flags", []))
    if flip_below_margin != Preprocessing.flip_below_margin:
        flags += ["--flip-below-margin", f"{flip_below_margin:g}"]
    return ("Reproduce: `python -m convert.pipeline --weights "
            "../shared/weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
            + (f" --seed {seed}" if seed is not None else "") + "".join(f" {flag}" for flag in flags) + "`.")


def model_card(meta: ModelMetadata, ev: dict, variants_table: list[dict], why: str, data: dict, train_info: dict,
               model_dir: Path = Path("model"), before: dict | None = None) -> str:
    training = train_info.get("training") or {}
    recipe = training.get("recipe") or {}
    counts = data.get("counts", {})
    labels = list(meta.labels)

    def cnt(split: str, cls: str, kind: str) -> int:
        return counts.get(f"{split}|{cls}|{kind}", 0)

    size_mb = (model_dir / meta.model_file).stat().st_size / 1e6
    lines = [
        "# Model card: yoga-pose-xception",
        "",
        (f"Classifies a photo as one of {len(labels)} yoga poses: {', '.join(labels)} (warrior = Warrior II), and "
         "says when a photo shows none of them. Shipped as `yoga-pose.tflite` "
         f"({meta.quantization}, {size_mb:.1f} MB, sha256 `{meta.sha256[:12]}…`) with `yoga-pose.json`, the "
         "metadata the server reads (labels and outputs in order, input, preprocessing with the person crop, "
         "open-set temperature and threshold)."),
        "",
        ("**For research and demonstration only.** The training photos were collected from public GitHub "
         "repositories whose authors state no licence (one is MIT); the model inherits that caveat. "
         "ImageNet terms apply to the Xception backbone weights; the person detector is MediaPipe's (Apache-2.0)."),
        "",
        "## Data",
        "",
        (f"`../shared/data/yoga/` ({data.get('images', '?')} images, manifest sha256 "
         f"`{str(training.get('manifest_sha256') or '')[:12]}…`) and the out-of-scope images of "
         "`../shared/data/negatives/` (other yoga poses, people doing other things, no person; trained as the "
         f"outlier output `{meta.outlier_label}`). Every image's source is in the manifests. Real photos and CGI "
         "renders are reported separately."),
        "",
        "| class | train real | train CGI | val real | val CGI |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in labels:
        lines.append(f"| {c} | {cnt('train', c, 'real')} | {cnt('train', c, 'cgi')} | {cnt('val', c, 'real')} | "
                     f"{cnt('val', c, 'cgi')} |")
    lines += ["", "## Training recipe", ""]
    for k, v in recipe.items():
        lines.append(f"- **{k.replace('_', ' ')}**: {v}")
    lines += [
        ("- **preprocessing** (identical in training, evaluation, the bench and serving: one code path, "
         f"`yogapose.preprocess`, rendered here from the metadata): {describe_preprocessing(meta)}."),
        "",
        reproduce_line(recipe, meta.preprocessing.flip_below_margin),
        "",
        *open_set_section(meta, ev, before),
        *framing_section(ev, before),
        "## Validation (through the serving code path)",
        "",
        ("Measured on the shipped flatbuffer by `python -m convert.evaluate model/yoga-pose.tflite "
         "../shared/data/yoga/val --negatives ../shared/data/negatives/val --framing`. Closed-set figures use the "
         "six-key answer's top label. The detector found a person in "
         f"{_pct((ev.get('person_found') or {}).get('real'))} of the real val photos"
         + (f"; the classifier was unsure of a crop and saw it mirrored too in {_pct(ev['flipped'])} of the val "
            "photos" if ev.get("flipped") else "")
         + ". A held-out test set exists elsewhere."),
        "",
        report(ev),
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Variants",
        "",
        "| variant | size (MB) | real acc | real macro recall | CGI acc | FPR at 95 % | TFLite vs Keras top-1 | "
        "max abs dp | infer ms (2 threads) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in variants_table:
        name = row["variant"] + (" (refused: fails verification)" if row.get("refused") else "")
        lines.append(
            f"| {name} | {row['bytes'] / 1e6:.1f} | {row['real_accuracy']:.4f} | {row['real_macro_recall']:.4f} | "
            f"{row.get('cgi_accuracy', float('nan')):.4f} | {_pct(row.get('fpr_at_95'))} | "
            f"{row['top1_agreement']:.4f} | "
            f"{row['max_abs_prob_diff']:.3g} | {row['infer_ms']:.1f} |"
        )
    thresholds = ", ".join(f"{k} {v}" for k, v in DEFAULT_MAX_DIFF.items())
    lines += [
        "",
        (f"Verification (`convert/convert.py`): top-1 agreement with Keras >= {DEFAULT_MIN_AGREEMENT} on the val "
         f"images whose Keras answer is clear (top probability ahead of the runner-up by >= {CLEAR_MARGIN}) and >= "
         f"{DEFAULT_MIN_OVERALL_AGREEMENT} on all (the table's column; near-ties flip under any rounding); max abs "
         f"probability difference at most: {thresholds}. A refused variant is measured for this table but never "
         "shipped."),
        "",
        f"**Why this one ships:** {why}.",
        "",
        "## Limits",
        "",
        *weak_classes(ev),
        ("- Six poses only. Other poses, other activities and photos without a person are rejected by the "
         "open-set verdict most of the time, not always: the table above gives the rates; a pose that is a close "
         "sibling of one of the six (warrior I, upward dog) is the hardest case."),
        "- Web-collected labels carry a few percent of noise and pose variants (twisted chair, cobra vs upward dog).",
        ("- One main person: with several people the largest detected body is classified. The detector misses "
         "some very small people; then the whole photo is classified (`person: null`)."),
        ("- Phase 2's checkpoint, the open-set threshold and temperature, and (when runs with several seeds were "
         "trained) which run ships were chosen on val, so the val figures above are somewhat optimistic; the "
         "held-out test sets are the fair measure."),
        "- CGI renders score lower than photos: training weighs a render half a real photo, because users send photos.",
        "",
        f"_Generated by `convert/pipeline.py` on {dt.date.today().isoformat()}._",
        "",
    ]
    return "\n".join(lines)


def weak_classes(ev: dict, goal: float = 0.90) -> list[str]:
    """Model-card bullets for classes whose real-photo recall is under the project's goal
    (issue 10's bar: every class >= 0.90), so the card says plainly which answers to doubt."""
    key = "real" if "real" in ev else "all"
    weak = {c: m["recall"] for c, m in ev[key]["per_class"].items() if m["recall"] is not None and m["recall"] < goal}
    return [
        f"- **{c}** is the weakest class: recall {r:.2f} on real val photos, under the {goal:.2f} goal "
        f"(confused mostly with {_top_confusion(ev[key], c)}); treat its answers with more care."
        for c, r in weak.items()
    ]


def _top_confusion(metrics: dict, cls: str) -> str:
    labels = list(metrics["per_class"])
    row = list(metrics["confusion"][labels.index(cls)])
    row[labels.index(cls)] = -1
    return labels[int(np.argmax(row))]


def ensure_detector(prep: Preprocessing, folder: Path, source_dir: Path = DEFAULT_MODEL_DIR) -> None:
    """Put the person detector in ``folder`` (the server loads it from beside a model): the
    ``--model-dir`` the run ships to, which gets the one set-up extracted into ``model/``, and
    the build folders whose variants are evaluated, which get the ship folder's. Hash checked
    when copied, so a run that trained for an hour does not end on a missing file."""
    crop = prep.person_crop
    if crop is None or copy_detector(crop.detector_file, crop.detector_sha256, folder, source_dir):
        return
    raise SystemExit(f"pipeline: neither {folder} nor {source_dir} holds the person detector "
                     f"{crop.detector_file} the metadata pins (sha256 {crop.detector_sha256[:12]}…); "
                     f"extract it with `.venv/bin/python localtools/assets.py --model-dir {source_dir}` "
                     "(bash .ci/setup does)")


def calibrate_variant(model_path: Path, ev: dict) -> None:
    """Fit the open-set verdict on this variant's own val outputs, write it into its
    metadata, and measure the verdict through the serving code (``ev["open_set"]``)."""
    raw = ev.pop("_raw")
    meta = load_metadata(model_path)
    if meta.outlier_label is None or "out" not in raw:
        return
    n = len(meta.labels)
    logits = np.concatenate([raw["in"]["raw"], raw["out"]["raw"]])
    labels = np.concatenate([raw["truth"], np.full(len(raw["out"]["raw"]), n)])
    real_in = np.concatenate([raw["real"], np.zeros(len(raw["out"]["raw"]), bool)])
    outlier = np.concatenate([np.zeros(len(raw["truth"]), bool), np.ones(len(raw["out"]["raw"]), bool)])
    fit = real_in | outlier  # real photos and out-of-scope images: what users send
    open_set, evidence = calibrate(logits[fit], labels[fit], real_in[fit], outlier[fit], n,
                                   f"outlier exposure: a seventh output '{meta.outlier_label}' trained on "
                                   "out-of-scope images")
    write_metadata(replace(meta, open_set=open_set), model_path)
    ev["open_set"] = open_set_metrics(ServingPath(model_path), raw)
    ev["calibration"] = evidence


def stage_model(current: Path, folder: Path) -> Path:
    """Copy a shipped model, its metadata and the person detector it pins into ``folder``
    (the server loads the detector from beside the model): the detector beside ``current``,
    else the one set-up extracted into model/, hash checked either way. Returns the copy."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / SHIP_NAME
    shutil.copyfile(current, copy)
    meta = load_metadata(current)
    write_metadata(replace(meta, model_file=copy.name), copy)  # the server checks the name
    prep = meta.preprocessing
    crop = prep.person_crop
    beside = crop is not None and (current.parent / crop.detector_file).is_file()
    ensure_detector(prep, folder, current.parent if beside else DEFAULT_MODEL_DIR)
    return copy


def evaluate_before(args: argparse.Namespace) -> dict | None:
    """Today's shipped model (if any; or ``--before``) on the same val photos, negatives and
    framing test: the card's "before" column. Copied to build/ first, since shipping replaces it."""
    current = args.before or args.model_dir / SHIP_NAME
    if not current.is_file() or not current.with_suffix(".json").is_file():
        return None
    saved = args.build / "eval-before.json"
    if saved.is_file():  # the same flatbuffer measured on an earlier run: its evaluation stands
        ev = json.loads(saved.read_text())
        if ev.get("model", {}).get("sha256") == sha256_file(current):
            print(f"today's model {current} (before): reusing {saved}")
            return ev
    copy = stage_model(current, args.build / "before")
    print(f"measuring today's model {current} (before)")
    ev = evaluate(copy, args.data / "val", negatives=args.negatives / "val")
    ev.pop("_raw", None)
    ev["framing"] = framing(copy, args.data / "val", args.negatives / "val" / "no_person")
    (args.build / "eval-before.json").write_text(json.dumps(ev, indent=2) + "\n")
    return ev


def record_validation(target: Path, ev: dict, before: dict | None) -> None:
    """The shipped metadata's record of the measurements: closed-set groups, verdict, framing."""
    meta = load_metadata(target)
    extra = dict(meta.extra)
    validation = {**extra.get("validation", {}), **validation_groups(ev)}
    if "open_set" in ev:
        validation["open_set"] = ev["open_set"]
        validation["calibration"] = ev.get("calibration")
    validation["framing"] = ev["framing"]
    validation["person_found"] = ev.get("person_found")
    validation["flipped"] = ev.get("flipped")
    if before is not None:
        validation["before"] = {k: before[k] for k in ("real", "open_set", "framing") if k in before}
    extra["validation"] = validation
    write_metadata(replace(meta, extra=extra), target)


def validation_groups(ev: dict) -> dict:
    """The metadata's closed-set validation record of an evaluation."""
    return {
        g: {"images": ev[g]["images"], "accuracy": ev[g]["accuracy"], "macro_recall": ev[g]["macro_recall"],
            "per_class_recall": {k: v["recall"] for k, v in ev[g]["per_class"].items()}}
        for g in ("real", "cgi", "all") if g in ev
    }


def measure_shipped(args: argparse.Namespace, target: Path) -> dict:
    """The shipped (calibrated) flatbuffer through the serving path: val, negatives, framing."""
    print(f"evaluating {target} (calibrated) through the serving path")
    # evaluate() measures the open-set verdict itself (the shipped metadata is calibrated).
    ev = evaluate(target, args.data / "val", negatives=args.negatives / "val")
    ev.pop("_raw")
    print("framing-robustness evaluation of the shipped model")
    ev["framing"] = framing(target, args.data / "val", args.negatives / "val" / "no_person")
    (args.build / "eval-shipped.json").write_text(json.dumps(ev, indent=2) + "\n")
    return ev


def publish(args: argparse.Namespace, target: Path, ev: dict, table: list[dict], why: str, info: dict,
            before: dict | None) -> None:
    """Validation into the shipped metadata, the confusion plot and the model card."""
    record_validation(target, ev, before)
    plot_confusion(ev, args.model_dir / "confusion.png")
    card = model_card(load_metadata(target), ev, table, why, data_summary(args.data), info, args.model_dir, before)
    (args.model_dir / "README.md").write_text(card)
    print(report(ev))


def remeasure(args: argparse.Namespace) -> int:
    """The shipped weights as they are, measured again through today's serving code."""
    target = args.model_dir / SHIP_NAME
    meta = load_metadata(target)
    before = evaluate_before(args) if args.before is not None else (meta.extra.get("validation") or {}).get("before")
    ev = measure_shipped(args, target)
    ev["calibration"] = (meta.extra.get("validation") or {}).get("calibration")
    selection = meta.extra.get("selection") or {}
    publish(args, target, ev, selection.get("variants") or [], selection.get("why") or "",
            {"training": meta.extra.get("training") or {}}, before)
    print(f"re-measured {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build = args.build
    build.mkdir(parents=True, exist_ok=True)
    if args.remeasure:
        return remeasure(args)
    keras_path = args.keras
    if keras_path is None:
        keras_path = build / "yoga-xception.keras"
        trained = train_mod.train(train_mod.parse_args(
            ["--data", str(args.data), "--negatives", str(args.negatives), "--weights", args.weights,
             "--output", str(keras_path), "--seed", str(args.seed), *args.train_args]))
    else:  # a model trained earlier: its training info was saved beside it
        train_json = Path(keras_path).with_suffix(".train.json")
        trained = json.loads(train_json.read_text()) if train_json.is_file() else {}
    info = training_info(trained)

    prep = Preprocessing.from_dict(trained["preprocessing"]) if "preprocessing" in trained else Preprocessing()
    # A serving-time choice, not something training did: set here, whatever the record says.
    flip = Preprocessing.flip_below_margin if args.flip_below_margin is None else args.flip_below_margin
    prep = replace(prep, flip_below_margin=flip)
    class_names = trained.get("class_names") or class_names_of(args.data / "train")
    model = load_keras(keras_path)
    val_x, _ = load_val_inputs(args.data / "val", class_names, prep, negatives=args.negatives / "val")
    keras_probs = np.asarray(model.predict(val_x, batch_size=64, verbose=1))
    before = evaluate_before(args)
    info.setdefault("training", {})["manifest_sha256"] = file_sha256(args.data / "manifest.csv")

    variants_dir = build / "variants"
    ensure_detector(prep, args.model_dir)
    for folder in (variants_dir, build / "rejected"):
        ensure_detector(prep, folder, args.model_dir)
    evals: dict[str, dict] = {}
    table: list[dict] = []
    for variant in [v for v in args.variants.split(",") if v]:
        out = variants_dir / f"yoga-pose-{variant}.tflite"
        rep = None
        if variant == "full_int8":
            sample = sample_train_images(args.data / "train", class_names, prep, args.calibration_images, args.seed)
            rep = representative_from(sample, prep)
        print(f"== {variant}: converting and verifying against Keras on {len(val_x)} val images")
        refused = None
        try:
            meta = convert_and_verify(model, variant, out, class_names, prep, val_x, keras_probs, rep, extra=info,
                                      rejected_dir=build / "rejected")
        except VerificationError as exc:
            print(f"   refused: {exc}")
            refused = exc.reason
            out = exc.kept if exc.kept is not None else build / "rejected" / out.name
            meta = load_metadata(out)
        ev = evaluate(out, args.data / "val", negatives=args.negatives / "val")
        calibrate_variant(out, ev)
        (build / f"eval-{variant}.json").write_text(json.dumps(ev, indent=2) + "\n")
        if refused is None:
            evals[variant] = ev  # only verified variants may ship
        key = "real" if "real" in ev else "all"
        row = {"variant": variant, "bytes": ev["model"]["bytes"], "real_accuracy": ev[key]["accuracy"],
               "real_macro_recall": ev[key]["macro_recall"], "infer_ms": ev["inference_ms_median"],
               "refused": refused, **meta.extra["verification"]}
        if "open_set" in ev:
            row["fpr_at_95"] = ev["open_set"]["fpr_at_95"]
            row["out_of_scope_rejected"] = ev["open_set"]["out_of_scope_rejected"]
        if "cgi" in ev:
            row["cgi_accuracy"] = ev["cgi"]["accuracy"]
        table.append(row)
        print(f"   {variant}: {row['bytes'] / 1e6:.1f} MB, real acc {row['real_accuracy']:.4f}, "
              f"macro recall {row['real_macro_recall']:.4f}, agreement {row['top1_agreement']:.4f}"
              + (f" (refused: {refused})" if refused else ""))
    (build / "variants.json").write_text(json.dumps(table, indent=2) + "\n")
    if "float32" not in evals:
        print("float32 variant missing or refused: cannot choose", file=sys.stderr)
        return 1
    chosen, why = choose(evals)
    print(f"chosen: {why}")
    if args.no_ship:
        return 0
    target = ship(variants_dir / f"yoga-pose-{chosen}.tflite", args.model_dir, evals[chosen], table, why)
    # Measured again as shipped: when the detector offers several people, the server answers
    # for the crop its open-set score rates highest, and that score is only final after
    # calibration (the variant's pass chose with 1 - P(other) at T = 1).
    shipped_eval = measure_shipped(args, target)
    shipped_eval["calibration"] = evals[chosen].get("calibration")
    publish(args, target, shipped_eval, table, why, info, before)
    print(f"shipped {target} ({chosen})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
