"""Evaluate a shipped ``.tflite`` on a ``<class>/<images>`` folder through the serving path.

Every image goes through exactly what the Lambda runs: ``yogapose.preprocess`` (decode,
person crop, resize, scale, all driven by the model's metadata), ``yogapose.runtime``
inference and ``yogapose.answer`` (six probabilities + open-set verdict). Prints accuracy,
macro-averaged recall, per-class precision/recall and the confusion matrix, and saves the
matrix as a PNG. When a ``manifest.csv`` marks CGI renders (``synthetic=1``), real photos and
renders are reported separately. With ``--negatives`` the open-set verdict is measured too
(rejection per out-of-scope category, acceptance per class, AUROC, FPR at 95 % acceptance,
calibration error); with ``--framing`` the real photos are also pasted into wider scenes at
100 %, 60 % and 40 % of a 1200x900 frame's height and classified again.

Usage::

    python -m convert.evaluate model/yoga-pose.tflite ../shared/data/yoga/val --plot build/confusion.png \
        --negatives ../shared/data/negatives/val --framing
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from yogapose import answer
from yogapose.config import load_settings
from yogapose.metadata import ModelMetadata
from yogapose.observability import RequestStats

from . import openset
from .data import IMAGE_SUFFIXES, negative_items, paste, read_manifest

FRAMING_FRACTIONS = (1.0, 0.6, 0.4)
FRAMING_FRAME = (1200, 900)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default).

    A class with 39 val photos moves 2.6 points per photo: the card prints the interval so a
    recall is read with its uncertainty, and the normal approximation fails near 1.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Metrics:
    labels: list[str]
    confusion: np.ndarray  # rows: true class, columns: predicted class
    files: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.n, 1))

    def recall(self) -> np.ndarray:
        support = self.confusion.sum(1)
        return np.divide(np.diag(self.confusion), support, out=np.full(len(self.labels), np.nan), where=support > 0)

    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(0)
        return np.divide(np.diag(self.confusion), predicted, out=np.full(len(self.labels), np.nan), where=predicted > 0)

    @property
    def macro_recall(self) -> float:
        r = self.recall()
        return float(np.nanmean(r)) if np.any(~np.isnan(r)) else float("nan")

    def to_dict(self) -> dict:
        r, p = self.recall(), self.precision()
        return {
            "images": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_recall": round(self.macro_recall, 4),
            "per_class": {
                lab: {
                    "precision": None if np.isnan(p[i]) else round(float(p[i]), 4),
                    "recall": None if np.isnan(r[i]) else round(float(r[i]), 4),
                    "support": int(self.confusion[i].sum()),
                }
                for i, lab in enumerate(self.labels)
            },
            "confusion": self.confusion.tolist(),
        }

    def table(self, title: str) -> str:
        lines = [f"### {title}: {self.n} images, accuracy {self.accuracy:.4f}, "
                 f"macro recall {self.macro_recall:.4f}", ""]
        lines.append("| class | precision | recall | recall, 95 % interval | support |")
        lines.append("|---|---:|---:|---:|---:|")
        r, p = self.recall(), self.precision()
        def fmt(v: float) -> str:
            return "-" if np.isnan(v) else f"{v:.3f}"

        for i, lab in enumerate(self.labels):
            n = int(self.confusion[i].sum())
            lo, hi = wilson_interval(int(self.confusion[i, i]), n)
            interval = "-" if n == 0 else f"{lo:.2f}-{hi:.2f}"
            lines.append(f"| {lab} | {fmt(p[i])} | {fmt(r[i])} | {interval} | {n} |")
        lines.append("")
        lines.append("Confusion matrix (rows = true, columns = predicted):")
        lines.append("")
        lines.append("| true \\ pred | " + " | ".join(self.labels) + " |")
        lines.append("|---|" + "---:|" * len(self.labels))
        for i, lab in enumerate(self.labels):
            lines.append(f"| {lab} | " + " | ".join(str(int(v)) for v in self.confusion[i]) + " |")
        return "\n".join(lines)


def gather(folder: Path, labels: list[str]) -> list[tuple[Path, int]]:
    """Images of ``folder/<class>/``; a class folder unknown to the model is an error."""
    items: list[tuple[Path, int]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in labels:
            raise ValueError(f"folder {sub.name!r} is not one of the model's labels {labels}")
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                items.append((f, labels.index(sub.name)))
    if not items:
        raise FileNotFoundError(f"no images under {folder}/<class>/")
    return items


def find_manifest(folder: Path, manifest: Path | None) -> tuple[dict, Path | None]:
    """The manifest and the root its ``file`` column is relative to (``folder/..`` by default)."""
    if manifest is not None:
        return read_manifest(manifest.parent), manifest.parent
    for root in (folder.parent, folder):
        rows = read_manifest(root)
        if rows:
            return rows, root
    return {}, None


class ServingPath:
    """The server's own classification (:meth:`yogapose.app.App.classify`) of one flatbuffer,
    without HTTP around it: decode, person candidates, inference, the crop chosen, the answer."""

    def __init__(self, model_path: Path, num_threads: int = 2) -> None:
        from yogapose.app import App
        from yogapose.runtime import Model

        self.app = App(load_settings(), Model.load(model_path, num_threads=num_threads))
        self.meta: ModelMetadata = self.app.metadata
        self.pre = self.app.preprocessor
        self.max_pixels = self.app.settings.max_pixels

    def run(self, data: bytes) -> tuple[np.ndarray, dict | None, float, int]:
        """Bytes -> (raw outputs of the crop answered for, person box or None, inference ms,
        crops classified mirrored too)."""
        stats = RequestStats()
        ans = self.app.classify(data, stats)
        assert ans.outputs is not None
        return np.asarray(ans.outputs, np.float64).reshape(-1), ans.person, stats.ms["infer"], stats.flipped

    def answer(self, raw: np.ndarray, person: dict | None) -> answer.Answer:
        """The answer for those outputs under the metadata as it is now (e.g. after calibration)."""
        return answer.build(raw, self.meta, person, self.pre.detector is not None)


def run_all(path: ServingPath, files: list[Path]) -> dict:
    """Raw outputs, person boxes and inference times of every file."""
    raws, persons, ms, flipped = [], [], [], []
    for f in files:
        raw, person, t, n = path.run(Path(f).read_bytes())
        raws.append(raw)
        persons.append(person)
        ms.append(t)
        flipped.append(n > 0)
    return {"raw": np.array(raws), "person": persons, "ms": ms, "flipped": flipped}


def as_logits(raw: np.ndarray, meta: ModelMetadata) -> np.ndarray:
    """Logits of the outputs (a softmax model's log-probabilities serve as its logits)."""
    if meta.output_activation == "linear":
        return raw
    return np.log(np.clip(raw / raw.sum(axis=1, keepdims=True), 1e-12, 1.0))


def evaluate(model_path: Path, folder: Path, manifest: Path | None = None, num_threads: int = 2,
             negatives: Path | None = None) -> dict:
    """Run every image through the serving path; metrics for all, real and CGI images, and
    with ``negatives`` (a ``<category>/<images>`` folder) the open-set verdict's."""
    path = ServingPath(model_path, num_threads)
    meta = path.meta
    labels = list(meta.labels)
    items = gather(folder, labels)
    rows, root = find_manifest(folder, manifest)
    run = run_all(path, [p for p, _ in items])
    truth = np.array([c for _, c in items])
    pred = run["raw"][:, : len(labels)].argmax(1)
    real = np.ones(len(items), dtype=bool)
    groups = {"all": np.zeros((len(labels),) * 2, np.int64)}
    if rows:
        groups["real"] = np.zeros_like(groups["all"])
        groups["cgi"] = np.zeros_like(groups["all"])
    mistakes = []
    for i, (p, t) in enumerate(items):
        groups["all"][t, pred[i]] += 1
        if rows:
            rel = p.absolute().relative_to(root.absolute()).as_posix() if root else p.name
            row = rows.get(rel)
            real[i] = not (row is not None and row.get("synthetic") == "1")
            groups["real" if real[i] else "cgi"][t, pred[i]] += 1
        if pred[i] != t:
            ans = path.answer(run["raw"][i], run["person"][i])
            mistakes.append({"file": str(p), "true": labels[t], "pred": labels[pred[i]],
                             "p": round(ans.probabilities[labels[pred[i]]], 3)})
    result: dict = {name: Metrics(labels, cm).to_dict() for name, cm in groups.items() if cm.sum() > 0}
    result["model"] = {"file": str(model_path), "sha256": meta.sha256, "quantization": meta.quantization,
                       "bytes": Path(model_path).stat().st_size}
    result["inference_ms_median"] = round(float(np.median(run["ms"])), 2)
    result["flipped"] = round(float(np.mean(run["flipped"])), 4)  # photos with a crop seen mirrored too
    result["person_found"] = {
        "real": round(float(np.mean([run["person"][i] is not None for i in np.flatnonzero(real)])), 4),
        "all": round(float(np.mean([p is not None for p in run["person"]])), 4),
    }
    result["mistakes"] = mistakes
    result["_raw"] = {"in": run, "truth": truth, "real": real}
    if negatives is not None:
        neg_items = negative_items(negatives, len(labels))
        neg_run = run_all(path, [p for p, _ in neg_items])
        result["_raw"]["out"] = neg_run
        result["_raw"]["categories"] = [p.parent.name for p, _ in neg_items]
        result["open_set"] = open_set_metrics(path, result["_raw"])
    return result


def open_set_metrics(path: ServingPath, raw: dict) -> dict:
    """The verdict on val through ``yogapose.answer``: acceptance per class (accepted and
    correct), rejection per out-of-scope category, AUROC / FPR at 95 % acceptance of the
    score the metadata names (max softmax for a model without one), and calibration error of
    the confidence on real photos."""
    meta = path.meta
    labels = list(meta.labels)
    n = len(labels)
    truth, real = raw["truth"], raw["real"]
    ans_in = [path.answer(r, p) for r, p in zip(raw["in"]["raw"], raw["in"]["person"], strict=True)]
    ans_out = [path.answer(r, p) for r, p in zip(raw["out"]["raw"], raw["out"]["person"], strict=True)]
    cats = raw["categories"]
    per_class = {}
    for c, lab in enumerate(labels):
        idx = [int(i) for i in np.flatnonzero(real & (truth == c))]
        if idx:
            per_class[lab] = {
                "images": len(idx),
                "accepted": round(float(np.mean([ans_in[i].pose is not None for i in idx])), 4),
                "accepted_and_correct": round(float(np.mean([ans_in[i].pose == lab for i in idx])), 4),
            }
    rejected = {}
    for cat in sorted(set(cats)):
        idx = [i for i, k in enumerate(cats) if k == cat]
        rejected[cat] = {
            "images": len(idx),
            "rejected": round(float(np.mean([ans_out[i].pose is None for i in idx])), 4),
            "no_person": round(float(np.mean([ans_out[i].reason == answer.NO_PERSON for i in idx])), 4),
        }
    os_meta = meta.open_set
    score, temperature = (os_meta.score, os_meta.temperature) if os_meta else ("max_softmax", 1.0)
    li, lo = as_logits(raw["in"]["raw"], meta), as_logits(raw["out"]["raw"], meta)
    s_in = openset.scores(li[real], n, score, temperature)
    s_out = openset.scores(lo, n, score, temperature)
    conf = np.array([ans_in[i].confidence if os_meta else max(ans_in[i].probabilities.values())
                     for i in np.flatnonzero(real)])
    correct = np.array([ans_in[i].top == labels[truth[i]] for i in np.flatnonzero(real)])
    accepted_out = float(np.mean([a.pose is not None for a in ans_out]))
    return {
        "method": os_meta.method if os_meta else "none (always one of the six); measured with max softmax",
        "score": score,
        "temperature": temperature,
        "threshold": os_meta.threshold if os_meta else None,
        "in_scope_accepted": round(float(np.mean([ans_in[i].pose is not None for i in np.flatnonzero(real)])), 4),
        "accepted_and_correct_macro": round(float(np.mean([v["accepted_and_correct"] for v in per_class.values()])), 4)
        if os_meta else None,
        "per_class": per_class,
        "out_of_scope_rejected": round(1.0 - accepted_out, 4) if os_meta else 0.0,
        "per_category": rejected,
        "auroc": round(openset.auroc(s_in, s_out), 4),
        "fpr_at_95": round(openset.fpr_at(s_in, s_out), 4),
        "ece_real": round(openset.ece(conf, correct), 4),
    }


def framing(model_path: Path, folder: Path, scenes: Path, fractions: tuple[float, ...] = FRAMING_FRACTIONS,
            seed: int = 20261206, num_threads: int = 2, manifest: Path | None = None) -> dict:
    """The real val photos pasted into wider scenes (``scenes``: the ``no_person`` negatives,
    seeded) at each height fraction of a 1200x900 frame, saved as JPEG (q90) and classified
    through the serving path: closed-set recall per class, the detector's hit rate, and the
    verdict's acceptance (accepted and correct)."""
    path = ServingPath(model_path, num_threads)
    labels = list(path.meta.labels)
    items = gather(folder, labels)
    rows, root = find_manifest(folder, manifest)
    if rows and root is not None:
        items = [(p, c) for p, c in items
                 if (rows.get(p.absolute().relative_to(root.absolute()).as_posix()) or {}).get("synthetic") != "1"]
    backgrounds = sorted(f for f in Path(scenes).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    out: dict = {}
    for frac in fractions:
        rng = np.random.default_rng(seed)  # the same scenes and places at every scale
        cm = np.zeros((len(labels),) * 2, np.int64)
        found, accepted_correct = [], []
        for p, c in items:
            photo = Image.open(p).convert("RGB")
            scene = Image.open(backgrounds[int(rng.integers(len(backgrounds)))])
            composed = paste(photo, scene, FRAMING_FRAME, frac, rng)
            buf = io.BytesIO()
            composed.save(buf, "JPEG", quality=90)
            raw, person, _, _ = path.run(buf.getvalue())
            ans = path.answer(raw, person)
            cm[c, labels.index(ans.top)] += 1
            found.append(person is not None)
            accepted_correct.append(ans.pose == labels[c])
        m = Metrics(labels, cm)
        truth = np.array([c for _, c in items])
        acc_correct = np.array(accepted_correct)
        out[f"{int(frac * 100)}%"] = {
            "images": len(items),
            "macro_recall": round(m.macro_recall, 4),
            "per_class_recall": {lab: round(float(r), 4) for lab, r in zip(labels, m.recall(), strict=True)},
            "person_found": round(float(np.mean(found)), 4),
            "accepted_and_correct_macro": round(float(np.mean([acc_correct[truth == c].mean()
                                                              for c in range(len(labels)) if (truth == c).any()])), 4),
        }
    return out


def plot_confusion(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("real", "cgi", "all") if g in result]
    if "real" in groups:
        groups = [g for g in groups if g != "all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    labels = list(result[groups[0]]["per_class"].keys())
    for ax, g in zip(axes[0], groups, strict=True):
        cm = np.array(result[g]["confusion"])
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        title = {"real": "real photos", "cgi": "CGI renders", "all": "all images"}[g]
        ax.set_title(f"{title}: acc {result[g]['accuracy']:.3f}, macro recall {result[g]['macro_recall']:.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict) -> str:
    parts = []
    for g, title in (("real", "Real photos"), ("cgi", "CGI renders"), ("all", "All images")):
        if g in result:
            parts.append(Metrics(list(result[g]["per_class"]), np.array(result[g]["confusion"])).table(title))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help=".tflite with its metadata .json beside it")
    p.add_argument("folder", type=Path, nargs="?", default=Path("../shared/data/yoga/val"),
                   help="folder laid out as <class>/<images>")
    p.add_argument("--manifest", type=Path, default=None, help="manifest.csv (default: looked up beside the folder)")
    p.add_argument("--plot", type=Path, default=None, help="save the confusion matrix PNG here")
    p.add_argument("--json", type=Path, default=None, help="save the metrics as JSON here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--negatives", type=Path, default=None,
                   help="out-of-scope images as <category>/<images> (e.g. ../shared/data/negatives/val)")
    p.add_argument("--framing", action="store_true",
                   help="also classify the real photos pasted into wider no_person scenes (100/60/40 %%)")
    p.add_argument("--scenes", type=Path, default=Path("../shared/data/negatives/val/no_person"))
    args = p.parse_args(argv)
    result = evaluate(args.model, args.folder, args.manifest, args.threads, args.negatives)
    result.pop("_raw", None)
    if args.framing:
        result["framing"] = framing(args.model, args.folder, args.scenes, num_threads=args.threads,
                                    manifest=args.manifest)
    print(report(result))
    for key in ("open_set", "framing"):
        if key in result:
            print(f"\n{key}: " + json.dumps(result[key], indent=2))
    if args.plot:
        plot_confusion(result, args.plot)
        print(f"\nconfusion matrix plot: {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
