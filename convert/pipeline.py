"""The whole model pipeline in one command: train -> convert (4 variants) -> evaluate -> ship.

Reproduces ``model/yoga-pose.tflite``, its metadata ``model/yoga-pose.json``, the model card
``model/README.md`` and ``model/confusion.png`` from ``../shared``::

    python -m convert.pipeline --weights ../shared/weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5

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
from pathlib import Path

import numpy as np

from yogapose.metadata import ModelMetadata, load_metadata, sha256_file, write_metadata

from . import train as train_mod
from .convert import (
    VARIANTS,
    VerificationError,
    convert_and_verify,
    load_keras,
    load_val_inputs,
    representative_from,
    sample_train_images,
    training_info,
)
from .data import class_names_of, file_sha256
from .evaluate import evaluate, plot_confusion, report

SHIP_NAME = "yoga-pose.tflite"
# The shipped variant may lose at most this much real-photo accuracy against float32.
MAX_ACCURACY_LOSS = 0.005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/yoga"))
    p.add_argument("--weights", default="imagenet", help="Xception notop weights: 'imagenet' or a .h5 path")
    p.add_argument("--build", type=Path, default=Path("build"), help="where intermediate files go")
    p.add_argument("--model-dir", type=Path, default=Path("model"), help="where the shipped model goes")
    p.add_argument("--keras", type=Path, default=None, help="skip training and use this Keras model")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants to build")
    p.add_argument("--calibration-images", type=int, default=300)
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
    for old in model_dir.glob("*.tflite"):
        old.unlink()
    target = model_dir / SHIP_NAME
    shutil.copyfile(chosen_path, target)
    meta = load_metadata(chosen_path)
    validation = {
        g: {"images": ev[g]["images"], "accuracy": ev[g]["accuracy"], "macro_recall": ev[g]["macro_recall"],
            "per_class_recall": {k: v["recall"] for k, v in ev[g]["per_class"].items()}}
        for g in ("real", "cgi", "all") if g in ev
    }
    extra = dict(meta.extra)
    extra["validation"] = validation
    extra["selection"] = {"why": why, "variants": variants_table}
    shipped = ModelMetadata(
        name=meta.name, model_file=target.name, sha256=sha256_file(target), labels=meta.labels,
        input_shape=meta.input_shape, input_dtype=meta.input_dtype, preprocessing=meta.preprocessing,
        quantization=meta.quantization, extra=extra,
    )
    write_metadata(shipped, target)
    return target


def model_card(meta: ModelMetadata, ev: dict, variants_table: list[dict], why: str, data: dict, train_info: dict,
               model_dir: Path = Path("model")) -> str:
    recipe = (train_info.get("training") or {}).get("recipe") or {}
    counts = data.get("counts", {})
    labels = list(meta.labels)

    def cnt(split: str, cls: str, kind: str) -> int:
        return counts.get(f"{split}|{cls}|{kind}", 0)

    lines = [
        "# Model card: yoga-pose-xception",
        "",
        (f"Classifies a photo as one of {len(labels)} yoga poses: {', '.join(labels)} "
        "(warrior = Warrior II). Shipped as `yoga-pose.tflite` "
        f"({meta.quantization}, {(model_dir / meta.model_file).stat().st_size / 1e6:.1f} MB, sha256 `{meta.sha256[:12]}…`) "
        "with `yoga-pose.json`, the metadata the server reads (labels in output order, input shape, preprocessing)."),
        "",
        ("**For research and demonstration only.** The training photos were collected from public GitHub "
        "repositories whose authors state no licence (one is MIT); the model inherits that caveat. "
        "ImageNet terms apply to the Xception backbone weights."),
        "",
        "## Data",
        "",
        (f"`../shared/data/yoga/` ({data.get('images', '?')} images, manifest sha256 "
        f"`{str((train_info.get('training') or {}).get('manifest_sha256') or '')[:12]}…`). Every image's source repository, "
        "commit and original path are in `manifest.csv`. Real photos were checked by eye; CGI renders "
        "(a public synthetic set of 3D models) are reported separately. Near-duplicates were kept within one split."),
        "",
        "| class | train real | train CGI | val real | val CGI |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in labels:
        lines.append(f"| {c} | {cnt('train', c, 'real')} | {cnt('train', c, 'cgi')} | {cnt('val', c, 'real')} | {cnt('val', c, 'cgi')} |")
    lines += [
        "",
        "## Training recipe",
        "",
    ]
    for k, v in recipe.items():
        lines.append(f"- **{k.replace('_', ' ')}**: {v}")
    lines += [
        ("- **preprocessing** (identical in training and serving, one code path `yogapose.imaging`): decode with Pillow, "
        "EXIF orientation applied, RGB (alpha composited on white), JPEG draft decoding, resize to "
        f"{meta.preprocessing.size[0]}x{meta.preprocessing.size[1]} ({meta.preprocessing.interpolation}, aspect ratio not kept), "
        "`x / 127.5 - 1`."),
        "",
        "Reproduce: `python -m convert.pipeline --weights ../shared/weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5`.",
        "",
        "## Validation (through the serving code path)",
        "",
        ("Measured by `python -m convert.evaluate model/yoga-pose.tflite ../shared/data/yoga/val` on the shipped flatbuffer. "
        "The real-photo numbers are the ones that matter; a held-out test set exists elsewhere."),
        "",
        report(ev),
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Variants",
        "",
        "| variant | size (MB) | real acc | real macro recall | CGI acc | TFLite vs Keras top-1 | max abs dp | infer ms (2 threads) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in variants_table:
        name = row["variant"] + (" (refused: fails verification)" if row.get("refused") else "")
        lines.append(
            f"| {name} | {row['bytes'] / 1e6:.1f} | {row['real_accuracy']:.4f} | {row['real_macro_recall']:.4f} | "
            f"{row.get('cgi_accuracy', float('nan')):.4f} | {row['top1_agreement']:.4f} | {row['max_abs_prob_diff']:.3g} | "
            f"{row['infer_ms']:.1f} |"
        )
    lines += [
        "",
        ("Verification thresholds (`convert/convert.py`): top-1 agreement with Keras >= 0.99 on all val images; "
        "max abs probability difference <= 0.001 (float32), 0.05 (float16), 0.5/0.6 (int8). A refused variant is "
        "measured for this table but never shipped."),
        "",
        f"**Why this one ships:** {why}.",
        "",
        "## Limits",
        "",
        *weak_classes(ev),
        ("- Six poses only: anything else (another pose, no person) still gets one of the six labels; "
        "the web page and callers should treat a low top probability as \"unsure\"."),
        "- Web-collected labels carry a few percent of noise and pose variants (twisted chair, cobra vs upward dog).",
        "- One person, full body, roughly centred works best; the input is squashed to 150x150.",
        ("- Phase 2's checkpoint was chosen on the real val photos, so the val figures above are somewhat "
        "optimistic; the held-out test set is the fair measure."),
        ("- CGI renders score lower than photos: training weighs a render half a real photo, because users "
        "send photos."),
        "",
        f"_Generated by `convert/pipeline.py` on {dt.date.today().isoformat()}._",
        "",
    ]
    return "\n".join(lines)


def weak_classes(ev: dict, goal: float = 0.80) -> list[str]:
    """Model-card bullets for classes whose real-photo recall is under the project's goal."""
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    build = args.build
    build.mkdir(parents=True, exist_ok=True)
    keras_path = args.keras
    if keras_path is None:
        keras_path = build / "yoga-xception.keras"
        train_mod.main(["--data", str(args.data), "--weights", args.weights, "--output", str(keras_path),
                        "--seed", str(args.seed), *args.train_args])
    info = training_info(keras_path)
    train_json = Path(keras_path).with_suffix(".train.json")
    prep_dict = json.loads(train_json.read_text())["preprocessing"] if train_json.is_file() else None
    from yogapose.metadata import Preprocessing

    prep = Preprocessing.from_dict(prep_dict) if prep_dict else Preprocessing()
    class_names = class_names_of(args.data / "train")
    model = load_keras(keras_path)
    val_x, _ = load_val_inputs(args.data / "val", class_names, prep)
    keras_probs = np.asarray(model.predict(val_x, batch_size=64, verbose=1))
    info.setdefault("training", {})["manifest_sha256"] = file_sha256(args.data / "manifest.csv")

    variants_dir = build / "variants"
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
            refused = str(exc).split(": ", 1)[-1].split("; ")[0]
            out = build / "rejected" / out.name
            meta = load_metadata(out)
        ev = evaluate(out, args.data / "val")
        (build / f"eval-{variant}.json").write_text(json.dumps(ev, indent=2) + "\n")
        if refused is None:
            evals[variant] = ev  # only verified variants may ship
        key = "real" if "real" in ev else "all"
        row = {"variant": variant, "bytes": ev["model"]["bytes"], "real_accuracy": ev[key]["accuracy"],
               "real_macro_recall": ev[key]["macro_recall"], "infer_ms": ev["inference_ms_median"],
               "refused": refused, **meta.extra["verification"]}
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
    # ship() copies the flatbuffer byte for byte (same sha256), so the variant's evaluation
    # through the serving path is the shipped model's; no second pass over val.
    shipped_eval = {**evals[chosen], "model": {**evals[chosen]["model"], "file": str(target)}}
    plot_confusion(shipped_eval, args.model_dir / "confusion.png")
    card = model_card(load_metadata(target), shipped_eval, table, why, data_summary(args.data), info, args.model_dir)
    (args.model_dir / "README.md").write_text(card)
    print(report(shipped_eval))
    print(f"shipped {target} ({chosen})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
