"""Evaluate a shipped ``.tflite`` on a ``<class>/<images>`` folder through the serving path.

Every image goes through exactly what the Lambda runs: ``yogapose.imaging`` decoding and
preprocessing (driven by the model's metadata) and ``yogapose.runtime`` inference. Prints
accuracy, macro-averaged recall, per-class precision/recall and the confusion matrix, and
saves the matrix as a PNG. When a ``manifest.csv`` marks CGI renders (``synthetic=1``),
real photos and renders are reported separately.

Usage::

    python -m convert.evaluate model/yoga-pose.tflite ../shared/data/yoga/val --plot build/confusion.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yogapose.config import load_settings
from yogapose.imaging import preprocess_bytes
from yogapose.metadata import load_metadata

from .data import IMAGE_SUFFIXES, read_manifest


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
        lines = [f"### {title}: {self.n} images, accuracy {self.accuracy:.4f}, macro recall {self.macro_recall:.4f}", ""]
        lines.append("| class | precision | recall | support |")
        lines.append("|---|---:|---:|---:|")
        r, p = self.recall(), self.precision()
        for i, lab in enumerate(self.labels):
            fmt = lambda v: "-" if np.isnan(v) else f"{v:.3f}"
            lines.append(f"| {lab} | {fmt(p[i])} | {fmt(r[i])} | {int(self.confusion[i].sum())} |")
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
            raise SystemExit(f"folder {sub.name!r} is not one of the model's labels {labels}")
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                items.append((f, labels.index(sub.name)))
    if not items:
        raise SystemExit(f"no images under {folder}/<class>/")
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


def evaluate(model_path: Path, folder: Path, manifest: Path | None = None, num_threads: int = 2) -> dict:
    """Run every image through the serving path; metrics for all, real and CGI images."""
    from yogapose.runtime import Model

    meta = load_metadata(model_path)
    labels = list(meta.labels)
    model = Model.load(model_path, num_threads=num_threads)
    settings = load_settings()
    items = gather(folder, labels)
    rows, root = find_manifest(folder, manifest)

    groups = {"all": np.zeros((len(labels),) * 2, np.int64)}
    if rows:
        groups["real"] = np.zeros_like(groups["all"])
        groups["cgi"] = np.zeros_like(groups["all"])
    mistakes = []
    infer_ms = []
    for path, truth in items:
        x = preprocess_bytes(path.read_bytes(), meta.preprocessing, settings.max_pixels)
        t0 = time.perf_counter()
        probs = np.asarray(model.predict(x)).reshape(-1)
        infer_ms.append((time.perf_counter() - t0) * 1000)
        pred = int(probs.argmax())
        groups["all"][truth, pred] += 1
        if rows:
            rel = path.resolve().relative_to(root.resolve()).as_posix() if root else path.name
            row = rows.get(rel)
            kind = "cgi" if row is not None and row.get("synthetic") == "1" else "real"
            groups[kind][truth, pred] += 1
        if pred != truth:
            mistakes.append({"file": str(path), "true": labels[truth], "pred": labels[pred], "p": round(float(probs[pred]), 3)})
    result = {name: Metrics(labels, cm).to_dict() for name, cm in groups.items() if cm.sum() > 0}
    result["model"] = {"file": str(model_path), "sha256": meta.sha256, "quantization": meta.quantization,
                       "bytes": Path(model_path).stat().st_size}
    result["inference_ms_median"] = round(float(np.median(infer_ms)), 2)
    result["mistakes"] = mistakes
    return result


def plot_confusion(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("real", "cgi", "all") if g in result]
    if "real" in groups:
        groups = [g for g in groups if g != "all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    labels = list(result[groups[0]]["per_class"].keys())
    for ax, g in zip(axes[0], groups):
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
    args = p.parse_args(argv)
    result = evaluate(args.model, args.folder, args.manifest, args.threads)
    print(report(result))
    if args.plot:
        plot_confusion(result, args.plot)
        print(f"\nconfusion matrix plot: {args.plot}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
