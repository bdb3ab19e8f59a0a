"""Train the Xception yoga-pose classifier (transfer learning, two phases).

Architecture (the original design): Xception(include_top=False, 150x150x3, ImageNet) ->
GlobalAveragePooling2D -> Dense(500, relu) -> Dropout(0.2) -> Dense(n, softmax), Adam,
categorical cross-entropy.

What makes it better than the original frozen-base run, and still fast on a 2-core CPU:

* The bottom of Xception (everything below ``--finetune-from``) stays frozen in both phases,
  so its output is computed once per image and cached: for the clean image and for
  ``--augment-copies`` augmented versions (flips, small rotation/zoom/shift,
  brightness/contrast). Both phases then train on the cache.
* Phase 1 trains the head on the frozen base's pooled features.
* Phase 2 fine-tunes the top Xception blocks (from ``--finetune-from`` up; BatchNorm kept in
  inference mode, as Keras recommends for fine-tuning) and the head at a low learning rate.
* Balanced class weights computed over *effective* counts, where a CGI render counts
  ``--synthetic-weight`` of a real photo (real users send photos; the manifest says which is
  which), early stopping on validation, best checkpoint kept, fixed seed.
* Phase 2 is judged on the real photos in val (what the model is accepted on), not on overall
  val accuracy, which CGI renders of a few 3D models skew: by the mean of the macro-averaged
  recall and the worst class's recall, so a checkpoint cannot buy average recall with the
  smallest class (chair).

Usage::

    python -m convert.train --weights ../shared/weights/xception_weights_tf_dim_ordering_tf_kernels_notop.h5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
import keras
from keras import layers

from yogapose.metadata import Preprocessing

from .data import class_names_of, file_sha256, load_split, scale, synthetic_mask

DEFAULT_DATA = Path("../shared/data/yoga")
DEFAULT_OUT = Path("build/yoga-xception.keras")
# Input of Xception's block 12, the last middle-flow block: blocks 12-14 (the top of the
# middle flow and the whole exit flow) are fine-tuned, everything below is frozen and
# cached. Fine-tuning only block 14 gained ~1 point; frozen features plateau at ~0.86.
DEFAULT_FINETUNE_FROM = "block12_sepconv1_act"
# Phase 2's checkpoint/early-stopping metric: (macro recall + worst class recall) / 2 over
# the real val photos. Macro recall alone picked a checkpoint that traded chair (39 real val
# photos) for the big classes.
PHASE2_MONITOR = "val_real_score"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dir with train/<class>/ and val/<class>/")
    p.add_argument("--weights", default="imagenet",
                   help="Xception base weights: 'imagenet' (downloads) or a path to the notop .h5")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT, help="where to save the best .keras model")
    p.add_argument("--epochs-head", type=int, default=30, help="max epochs, phase 1 (head only)")
    p.add_argument("--epochs-finetune", type=int, default=12, help="max epochs, phase 2 (0 skips it)")
    p.add_argument("--augment-copies", type=int, default=3,
                   help="augmented copies of each training image cached besides the clean one")
    p.add_argument("--finetune-from", default=DEFAULT_FINETUNE_FROM,
                   help="Xception layer whose input starts the fine-tuned top part")
    p.add_argument("--finetune-steps", type=int, default=100,
                   help="batches per phase-2 epoch, each epoch a fresh random subset (0 = full pass)")
    p.add_argument("--cache-dir", type=lambda s: Path(s) if s else None, default=Path("build/cache"),
                   help="reuse cached bottom features across runs (keyed by all inputs that affect them); "
                        "'' disables the cache")
    p.add_argument("--synthetic-weight", type=float, default=0.5,
                   help="weight of a CGI render relative to a real photo (manifest.csv synthetic=1)")
    p.add_argument("--lr-head", type=float, default=3e-4)
    p.add_argument("--lr-finetune", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience (epochs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--input-size", type=int, default=150)
    p.add_argument("--interpolation", default="bilinear", help="Pillow resize filter (recorded in metadata)")
    return p.parse_args(argv)


def build_augmenter(seed: int):
    # Works on [0, 255] pixels, before the [-1, 1] scaling. Poses are left/right symmetric,
    # so horizontal flips keep the label; vertical flips would not.
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.04, fill_mode="reflect", seed=seed + 1),  # about +/- 14 degrees
            layers.RandomZoom((-0.15, 0.15), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.08, 0.08, fill_mode="reflect", seed=seed + 3),
            layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
            layers.RandomContrast(0.2, seed=seed + 5),
        ],
        name="augment",
    )


def build_base(weights: str, size: int):
    return keras.applications.Xception(include_top=False, weights=weights, input_shape=(size, size, 3))


def build_head(n_classes: int, n_features: int):
    inp = keras.Input((n_features,), name="pooled")
    x = layers.Dense(500, activation="relu", name="dense_500")(inp)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name="head")


def assemble(base, head, name: str = "yoga_xception"):
    """The deployable model: image in, probabilities out (shares the trained layers)."""
    inp = keras.Input(base.input.shape[1:], name="image")
    x = base(inp, training=False)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = head(x)
    return keras.Model(inp, out, name=name)


def cache_key(args: argparse.Namespace, train, val) -> str:
    """Digest of everything that changes the cached bottom features."""
    import hashlib

    h = hashlib.sha256()
    weights = Path(args.weights)
    h.update((file_sha256(weights) if weights.is_file() else str(args.weights)).encode())
    for part in (args.finetune_from, args.augment_copies, args.seed, args.input_size, args.interpolation):
        h.update(str(part).encode())
    h.update(train.images.tobytes())
    h.update(train.labels.tobytes())
    h.update(val.images.tobytes())
    return h.hexdigest()[:16]


def sample_weights(labels: np.ndarray, synthetic: np.ndarray, n_classes: int,
                   synthetic_weight: float) -> np.ndarray:
    """Per-image weights: a CGI render counts ``synthetic_weight`` of a real photo, then every
    class gets the same total weight (balanced over these effective counts); mean weight 1.

    Chair has the fewest real photos and half its training images are renders, so plain
    class balancing let the renders speak for the class.
    """
    base = np.where(synthetic, float(synthetic_weight), 1.0)
    effective = np.bincount(labels, weights=base, minlength=n_classes)
    return (base * len(labels) / (n_classes * np.maximum(effective[labels], 1e-12))).astype(np.float32)


def val_scores(probs, labels: np.ndarray, real: np.ndarray, n_classes: int) -> dict[str, float]:
    """Loss and accuracy over all val images; macro/worst recall and ``PHASE2_MONITOR`` over the
    real photos (``real`` mask) only."""
    probs = np.asarray(probs, dtype=np.float64)
    pred = probs.argmax(1)
    loss = -np.log(np.clip(probs[np.arange(len(pred)), labels], 1e-7, 1.0)).mean()
    recalls = [float((pred[real & (labels == c)] == c).mean())
               for c in range(n_classes) if (real & (labels == c)).any()]
    return {"val_loss": float(loss), "val_accuracy": float((pred == labels).mean()),
            "val_real_macro_recall": float(np.mean(recalls)), "val_real_min_recall": float(np.min(recalls)),
            PHASE2_MONITOR: float((np.mean(recalls) + np.min(recalls)) / 2)}


class ValScores(keras.callbacks.Callback):
    """:func:`val_scores` of the model being trained, logged every epoch (the progress bar
    shows them).

    Runs before EarlyStopping/ModelCheckpoint in the callback list, so they can monitor
    ``PHASE2_MONITOR``; keeps its own history (Keras' History may run first).
    """

    def __init__(self, data, labels: np.ndarray, real: np.ndarray, n_classes: int) -> None:
        super().__init__()
        self.data, self.labels, self.real, self.n = data, labels, real, n_classes
        self.history: dict[str, list[float]] = {}

    def scores(self, model) -> dict[str, float]:
        return val_scores(model.predict(self.data, verbose=0), self.labels, self.real, self.n)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        got = self.scores(self.model)
        if logs is not None:
            logs.update(got)
        for k, v in got.items():
            self.history.setdefault(k, []).append(v)


def extract(model, images: np.ndarray, prep: Preprocessing, batch: int, augmenter=None) -> np.ndarray:
    """Run the frozen bottom on (optionally augmented) uint8 images; float16 cache."""
    out = None
    n = len(images)
    bar = keras.utils.Progbar(n, unit_name="image")
    for start in range(0, n, batch):
        x = images[start:start + batch].astype(np.float32)
        if augmenter is not None:
            x = np.asarray(augmenter(x, training=True))
            x = np.clip(x, 0.0, 255.0)
        feats = np.asarray(model(scale(x, prep), training=False))
        if out is None:
            out = np.empty((n,) + feats.shape[1:], dtype=np.float16)
        out[start:start + len(feats)] = feats.astype(np.float16)
        bar.add(len(feats))
    return out


class CachedBatches(keras.utils.PyDataset):
    """Shuffled float32 batches over a float16 feature cache (keeps the cache half-size).

    ``steps > 0``: every epoch is a fresh random subset of ``steps * batch_size`` samples.
    """

    def __init__(self, x, y, batch_size: int, seed: int, shuffle: bool = True, steps: int = 0,
                 weights: np.ndarray | None = None) -> None:
        super().__init__()
        self.x, self.y, self.bs, self.shuffle, self.w = x, y, batch_size, shuffle, weights
        self.rng = np.random.default_rng(seed)
        self.take = min(len(x), steps * batch_size) if steps > 0 else len(x)
        self.order = np.arange(len(x))
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(self.take / self.bs)

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.bs:(i + 1) * self.bs])
        if self.w is not None:
            return self.x[idx].astype(np.float32), self.y[idx], self.w[idx]
        return self.x[idx].astype(np.float32), self.y[idx]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))[: self.take]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    prep = Preprocessing(size=(args.input_size, args.input_size), interpolation=args.interpolation)
    class_names = class_names_of(args.data / "train")
    n_classes = len(class_names)
    print(f"classes: {class_names}")
    train = load_split(args.data / "train", class_names, prep)
    val = load_split(args.data / "val", class_names, prep)
    print(f"train {len(train.labels)} images, val {len(val.labels)} images "
          f"({time.time() - t0:.0f}s to decode)")

    base = build_base(args.weights, args.input_size)
    base.trainable = False
    cut = base.get_layer(args.finetune_from).input
    bottom = keras.Model(base.input, cut, name="xception_bottom")
    top = keras.Model(cut, base.output, name="xception_top")

    # ---- cache the frozen bottom's output: clean + augmented copies of train, clean val
    key = cache_key(args, train, val)
    cache = args.cache_dir / f"features-{key}.npz" if args.cache_dir else None
    if cache is not None and cache.is_file():
        print(f"reusing cached features {cache}")
        with np.load(cache) as z:
            x_train, x_val = z["x_train"], z["x_val"]
    else:
        augmenter = build_augmenter(args.seed)
        print(f"caching features at {args.finetune_from}: 1 clean + {args.augment_copies} augmented copies")
        copies = [extract(bottom, train.images, prep, args.batch_size)]
        for k in range(args.augment_copies):
            print(f"augmented copy {k + 1}/{args.augment_copies}")
            copies.append(extract(bottom, train.images, prep, args.batch_size, augmenter))
        x_train = np.concatenate(copies)
        del copies
        x_val = extract(bottom, val.images, prep, args.batch_size)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, x_train=x_train, x_val=x_val)
    y_train = keras.utils.to_categorical(np.tile(train.labels, args.augment_copies + 1), n_classes)
    y_val = keras.utils.to_categorical(val.labels, n_classes)
    train_cgi = synthetic_mask(args.data, train.files)
    val_real = ~synthetic_mask(args.data, val.files)
    w_image = sample_weights(train.labels, train_cgi, n_classes, args.synthetic_weight)
    w_train = np.tile(w_image, args.augment_copies + 1)
    print("weight per image (real / CGI): " + ", ".join(
        f"{name} {w_image[(train.labels == c) & ~train_cgi].max(initial=0):.2f}"
        f"/{w_image[(train.labels == c) & train_cgi].max(initial=0):.2f}" for c, name in enumerate(class_names)))
    print(f"val: {int(val_real.sum())} real photos, {int((~val_real).sum())} CGI renders")

    # ---- phase 1: head on pooled features of the frozen top
    pooled_model = keras.Sequential([top, keras.layers.GlobalAveragePooling2D()])
    p_train = pooled_model.predict(CachedBatches(x_train, y_train, 128, args.seed, shuffle=False), verbose=1)
    p_val = pooled_model.predict(CachedBatches(x_val, y_val, 128, args.seed, shuffle=False), verbose=1)
    head = build_head(n_classes, p_train.shape[1])
    head.compile(optimizer=keras.optimizers.Adam(args.lr_head), loss="categorical_crossentropy",
                 metrics=["accuracy"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    head_ckpt = args.output.with_name(args.output.stem + ".head.weights.h5")
    print("phase 1: training the head on the frozen base")
    scores1 = ValScores(p_val, val.labels, val_real, n_classes)
    head.fit(
        p_train, y_train, batch_size=args.batch_size, epochs=args.epochs_head,
        sample_weight=w_train, verbose=1,
        callbacks=[
            scores1,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(head_ckpt, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True),
        ],
    )
    head.load_weights(head_ckpt)
    history = {"phase1": scores1.history}

    # ---- phase 2: fine-tune the top blocks + head on the cached bottom output
    if args.epochs_finetune > 0:
        base.trainable = True
        top_layers = {id(layer) for layer in top.layers}
        for layer in base.layers:
            is_bn = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = id(layer) in top_layers and not is_bn
        inp = keras.Input(x_train.shape[1:], name="cut")
        x = top(inp, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        tune = keras.Model(inp, head(x), name="finetune")
        tune.compile(optimizer=keras.optimizers.Adam(args.lr_finetune), loss="categorical_crossentropy",
                     metrics=["accuracy"])
        n_trainable = sum(int(np.prod(w.shape)) for w in tune.trainable_weights)
        print(f"phase 2: fine-tuning from {args.finetune_from} ({n_trainable:,} trainable weights)")
        tune_ckpt = args.output.with_name(args.output.stem + ".finetune.weights.h5")
        # Phase 1 stops on val_loss (a well-calibrated start); phase 2 is judged on the real
        # photos' macro recall, and only kept if it beats the phase-1 head's.
        scores2 = ValScores(CachedBatches(x_val, y_val, 128, args.seed, shuffle=False), val.labels, val_real,
                            n_classes)
        baseline = scores2.scores(tune)[PHASE2_MONITOR]
        print(f"phase 1 {PHASE2_MONITOR} {baseline:.4f}")
        ckpt = keras.callbacks.ModelCheckpoint(tune_ckpt, monitor=PHASE2_MONITOR, mode="max",
                                               save_best_only=True, save_weights_only=True,
                                               initial_value_threshold=baseline)
        tune.fit(
            CachedBatches(x_train, y_train, args.batch_size, args.seed, steps=args.finetune_steps, weights=w_train),
            epochs=args.epochs_finetune, verbose=1,
            callbacks=[
                scores2,
                keras.callbacks.EarlyStopping(monitor=PHASE2_MONITOR, mode="max", patience=args.patience,
                                              restore_best_weights=False),
                ckpt,
            ],
        )
        history["phase2"] = scores2.history
        if tune_ckpt.exists():
            tune.load_weights(tune_ckpt)
            history["phase2_kept"] = True
        else:
            print(f"phase 2 did not beat phase 1 on {PHASE2_MONITOR}; keeping the phase-1 weights")
            history["phase2_kept"] = False
            # restore phase-1 state of the shared layers
            base_fresh = build_base(args.weights, args.input_size)
            base.set_weights(base_fresh.get_weights())
            head.load_weights(head_ckpt)

    for layer in base.layers:
        layer.trainable = False
    model = assemble(base, head)
    # The deployable model must give the same answers as the cached training path.
    probs = model.predict(scale(val.images, prep), batch_size=64, verbose=1)
    acc = float((probs.argmax(1) == val.labels).mean())
    recalls = [float((probs.argmax(1)[val.labels == c] == c).mean()) for c in range(n_classes)]
    print(f"val accuracy {acc:.4f}, macro recall {np.mean(recalls):.4f}, "
          f"per class { {class_names[c]: round(r, 3) for c, r in enumerate(recalls)} }")
    real_recall = val_scores(probs, val.labels, val_real, n_classes)["val_real_macro_recall"]
    print(f"real photos: macro recall {real_recall:.4f}")
    model.save(args.output)
    info = {
        "class_names": class_names,
        "preprocessing": prep.to_dict(),
        "recipe": {
            "architecture": "Xception(include_top=False, imagenet) -> GAP -> Dense(500, relu) -> "
                            f"Dropout(0.2) -> Dense({n_classes}, softmax)",
            "input_size": args.input_size,
            "phase1": f"head only, Adam lr={args.lr_head}, <= {args.epochs_head} epochs",
            "phase2": f"fine-tune from {args.finetune_from} (BatchNorm frozen), Adam lr={args.lr_finetune}, "
                      f"<= {args.epochs_finetune} epochs",
            "augmentation": f"{args.augment_copies} cached augmented copies per image + clean: horizontal flip, "
                            "rotation +/-14deg, zoom +/-15%, shift +/-8%, brightness +/-15%, contrast +/-20%",
            "class_weighting": f"balanced over effective counts, a CGI render weighing {args.synthetic_weight} "
                               "of a real photo",
            "early_stopping": "phase 1 on val_loss; phase 2 on the real val photos' (macro recall + worst "
                              f"class recall) / 2; patience {args.patience}, best checkpoint kept",
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
        "train_images": len(train.labels),
        "val_images": len(val.labels),
        "manifest_sha256": file_sha256(args.data / "manifest.csv"),
        "val_accuracy_keras": acc,
        "val_macro_recall_keras": float(np.mean(recalls)),
        "val_real_macro_recall_keras": real_recall,
        "history": history,
        "seconds": round(time.time() - t0, 1),
        "versions": {"keras": keras.__version__, "tensorflow": _tf_version(), "numpy": np.__version__},
    }
    args.output.with_suffix(".train.json").write_text(json.dumps(info, indent=2) + "\n")
    for tmp in (head_ckpt, args.output.with_name(args.output.stem + ".finetune.weights.h5")):
        tmp.unlink(missing_ok=True)
    print(f"saved {args.output} in {time.time() - t0:.0f}s")
    return info


def _tf_version() -> str:
    try:
        import tensorflow as tf

        return tf.__version__
    except ImportError:  # pragma: no cover - Keras on another backend
        return "n/a"


if __name__ == "__main__":
    main()
