"""Train the Xception yoga-pose classifier (transfer learning, two phases).

Architecture (the original design): Xception(include_top=False, 150x150x3, ImageNet) ->
GlobalAveragePooling2D -> Dense(500, relu) -> Dropout(0.2) -> Dense(n + 1) logits, Adam,
categorical cross-entropy. The extra output is :data:`~convert.data.OUTLIER_LABEL`
("other"), trained on ``../shared/data/negatives`` (outlier exposure as a class of its own);
the server turns the logits into the six-key answer and an open-set verdict with the
temperature and threshold that ``convert.calibrate`` fits on val.

Person first: every image goes through the serving preprocessing, person crop included
(``yogapose.preprocess``), and one copy of each training image is pasted at a random scale
into a ``no_person`` scene first, so the classifier learns the crops the detector gives on
wide shots and copes when the detector misses.

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
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
import keras
from keras import layers

from yogapose.metadata import CROP_OUTSIDE, PersonCrop, Preprocessing
from yogapose.person import PersonBox

from .data import (
    OUTLIER_LABEL,
    class_names_of,
    crop_uint8,
    file_sha256,
    frame_uint8,
    list_images,
    negative_items,
    open_upright,
    paste_placed,
    placed_region,
    scale,
    synthetic_mask,
)
from .openset import softmax

DEFAULT_DATA = Path("../shared/data/yoga")
DEFAULT_NEGATIVES = Path("../shared/data/negatives")
DEFAULT_OUT = Path("build/yoga-xception.keras")
# Input of Xception's block 12, the last middle-flow block: blocks 12-14 (the top of the
# middle flow and the whole exit flow) are fine-tuned, everything below is frozen and
# cached. Fine-tuning only block 14 gained ~1 point; frozen features plateau at ~0.86.
DEFAULT_FINETUNE_FROM = "block12_sepconv1_act"
# Phase 2's checkpoint/early-stopping metric: (macro recall + worst class recall) / 2 over
# the real val photos. Macro recall alone picked a checkpoint that traded chair (39 real val
# photos) for the big classes.
PHASE2_MONITOR = "val_real_score"
# In-scope acceptance the open-set threshold is set for (the 95 %).
ACCEPT_RATE = 0.95


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dir with train/<class>/ and val/<class>/")
    p.add_argument("--weights", default="imagenet",
                   help="Xception base weights: 'imagenet' (downloads) or a path to the notop .h5")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT, help="where to save the best .keras model")
    p.add_argument("--epochs-head", type=int, default=30, help="max epochs, phase 1 (head only)")
    p.add_argument("--epochs-finetune", type=int, default=12, help="max epochs, phase 2 (0 skips it)")
    p.add_argument("--negatives", type=lambda s: Path(s) if s else None, default=DEFAULT_NEGATIVES,
                   help="out-of-scope images: train/<category>/ and val/<category>/ ('' = none)")
    p.add_argument("--augment-copies", type=int, default=1,
                   help="augmented copies of each training image cached besides the clean one")
    p.add_argument("--paste-copies", type=int, default=2,
                   help="copies pasted at a random scale into a no_person scene (then cropped and augmented)")
    p.add_argument("--paste-crop", choices=("original", "detector"), default="original",
                   help="crop of a pasted copy: the person region found on the original photo, or the "
                        "detector's pick on the composed frame (the recipe of models trained before 3fb22df)")
    p.add_argument("--no-person-crop", action="store_true", help="classify whole images (no detector)")
    p.add_argument("--crop-outside", choices=CROP_OUTSIDE, default=PersonCrop.outside,
                   help="where the person's square leaves the image: clip to it, or repeat its edge pixels")
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
    p.add_argument("--lr-drop", type=float, default=1.0,
                   help="phase 2: multiply the learning rate by this when the monitored val score has not "
                        "improved for --lr-drop-patience epochs (1 = constant rate: the shipped recipe)")
    p.add_argument("--lr-drop-patience", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=4, help="early-stopping patience (epochs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--input-size", type=int, default=150)
    p.add_argument("--interpolation", default="bilinear", help="Pillow resize filter (recorded in metadata)")
    return p.parse_args(argv)


# Flags that say where things are, not how the model is trained (the seed has its own place).
NOT_RECIPE = frozenset({"data", "weights", "output", "cache_dir", "negatives", "seed"})


def recipe_flags(args: argparse.Namespace) -> list[str]:
    """This run's training flags that differ from the defaults, as a command line gives them,
    so that the model card's one command trains the same recipe again."""
    defaults = vars(parse_args([]))
    flags: list[str] = []
    for key, value in vars(args).items():
        if key in NOT_RECIPE or key not in defaults or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def build_augmenter(seed: int) -> keras.Sequential:
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


def build_base(weights: str, size: int) -> keras.Model:
    return keras.applications.Xception(include_top=False, weights=weights, input_shape=(size, size, 3))


def build_head(n_classes: int, n_features: int) -> keras.Model:
    inp = keras.Input((n_features,), name="pooled")
    x = layers.Dense(500, activation="relu", name="dense_500")(inp)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(n_classes, name="logits")(x)  # softmax (with a temperature) is the server's
    return keras.Model(inp, out, name="head")


def assemble(base: keras.Model, head: keras.Model, name: str = "yoga_xception") -> keras.Model:
    """The deployable model: image in, probabilities out (shares the trained layers)."""
    inp = keras.Input(base.input.shape[1:], name="image")
    x = base(inp, training=False)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = head(x)
    return keras.Model(inp, out, name=name)


def cache_key(args: argparse.Namespace, train_images: np.ndarray, train_labels: np.ndarray,
              val_images: np.ndarray, pasted: list[np.ndarray]) -> str:
    """Digest of everything that changes the cached bottom features."""
    import hashlib

    h = hashlib.sha256()
    weights = Path(args.weights)
    h.update((file_sha256(weights) or str(args.weights)).encode())  # None: not a file
    for part in (args.finetune_from, args.augment_copies, args.paste_copies, args.seed, args.input_size,
                 args.interpolation, args.no_person_crop):
        h.update(str(part).encode())
    for arr in (train_images, train_labels, val_images, *pasted):
        h.update(arr.tobytes())
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


def val_scores(logits: np.ndarray, labels: np.ndarray, real: np.ndarray, n_classes: int) -> dict[str, float]:
    """Scores of the logits over val (the six classes + the outlier class ``n_classes - 1``).

    Loss and accuracy over all images; macro/worst recall of the six over the real photos
    (``real`` mask, argmax over the six); the open-set false-positive rate: the share of
    out-of-scope images whose top in-scope probability reaches the threshold that accepts
    ``ACCEPT_RATE`` of the real photos. ``PHASE2_MONITOR`` averages (macro + worst) / 2 and
    1 - that rate, so a checkpoint cannot buy recall with rejection or the reverse.
    """
    probs = softmax(logits)
    n_pose = n_classes - 1
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)).mean()
    pose_pred = probs[:, :n_pose].argmax(1)
    recalls = [float((pose_pred[real & (labels == c)] == c).mean())
               for c in range(n_pose) if (real & (labels == c)).any()]
    score = probs[:, :n_pose].max(1)
    outlier = labels == n_pose
    fpr = 0.0
    if outlier.any() and real.any():
        threshold = np.quantile(score[real & ~outlier], 1.0 - ACCEPT_RATE)
        fpr = float((score[outlier] >= threshold).mean())
    closed = (np.mean(recalls) + np.min(recalls)) / 2
    return {"val_loss": float(loss), "val_accuracy": float((probs.argmax(1) == labels).mean()),
            "val_real_macro_recall": float(np.mean(recalls)), "val_real_min_recall": float(np.min(recalls)),
            "val_fpr_at_95": fpr, PHASE2_MONITOR: float((closed + 1.0 - fpr) / 2)}


class ValScores(keras.callbacks.Callback):
    """:func:`val_scores` of the model being trained, logged every epoch (the progress bar
    shows them).

    Runs before EarlyStopping/ModelCheckpoint in the callback list, so they can monitor
    ``PHASE2_MONITOR``; keeps its own history (Keras' History may run first).
    """

    def __init__(self, data: np.ndarray | CachedBatches, labels: np.ndarray, real: np.ndarray,
                 n_classes: int) -> None:
        super().__init__()
        self.data, self.labels, self.real, self.n = data, labels, real, n_classes
        self.history: dict[str, list[float]] = {}

    def scores(self, model: keras.Model) -> dict[str, float]:
        return val_scores(model.predict(self.data, verbose=0), self.labels, self.real, self.n)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        got = self.scores(self.model)
        if logs is not None:
            logs.update(got)
        for k, v in got.items():
            self.history.setdefault(k, []).append(v)


def extract(model: keras.Model, images: np.ndarray, prep: Preprocessing, batch: int,
            augmenter: keras.Sequential | None = None) -> np.ndarray:
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
    if out is None:
        raise ValueError("no images to extract features from")
    return out


class CachedBatches(keras.utils.PyDataset):
    """Shuffled float32 batches over a float16 feature cache (keeps the cache half-size).

    ``steps > 0``: every epoch is a fresh random subset of ``steps * batch_size`` samples.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, shuffle: bool = True, steps: int = 0,
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


def person_crop_of(args: argparse.Namespace) -> PersonCrop | None:
    return None if args.no_person_crop else PersonCrop(outside=args.crop_outside)


def load_items(args: argparse.Namespace, split: str, class_names: list[str]) -> list[tuple[Path, int]]:
    """A split's in-scope images, then its out-of-scope ones labelled as the outlier class."""
    items = list_images(args.data / split, class_names)
    if args.negatives:
        items += negative_items(args.negatives / split, class_names.index(OUTLIER_LABEL))
    if not items:
        raise FileNotFoundError(f"no images under {args.data / split}")
    return items


def decode_all(items: list[tuple[Path, int]], prep: Preprocessing
               ) -> tuple[list[Image.Image], list[PersonBox | None], np.ndarray, np.ndarray]:
    """Upright originals and the person found in each (kept for the paste augmentation),
    their served crops, and whether the detector found a person in each."""
    w, h = prep.size
    originals: list[Image.Image] = []
    persons: list[PersonBox | None] = []
    framed = np.empty((len(items), h, w, 3), dtype=np.uint8)
    bar = keras.utils.Progbar(len(items), unit_name="image")
    for i, (path, _) in enumerate(items):
        img = open_upright(path, prep)
        originals.append(img)
        framed[i], person = frame_uint8(img, prep)
        persons.append(person)
        bar.add(1)
    return originals, persons, framed, np.array([p is not None for p in persons], dtype=bool)


def pasted_copy(originals: list[Image.Image], persons: list[PersonBox | None], scenes: list[Image.Image],
                prep: Preprocessing, rng: np.random.Generator, crop: str = "original") -> np.ndarray:
    """Each original pasted at 35-100 % of the height of a random scene (400-800 px wide
    frames): the wide shots users take, cropped to the person's square found on the original
    and carried into the frame, scene around it included (the whole pasted photo when none
    was found).

    Not the detector's pick on the composed frame: on small people it often picks a body in
    the scene (a dog, a passer-by) or a loose circle, and that crop labelled with the pose is
    label noise. The region from the original is the crop a correct pick gives; the server
    gets there by letting the classifier choose among the detector's candidates.
    """
    w, h = prep.size
    out = np.empty((len(originals), h, w, 3), dtype=np.uint8)
    bar = keras.utils.Progbar(len(originals), unit_name="image")
    for i, (img, person) in enumerate(zip(originals, persons, strict=True)):
        scene = scenes[int(rng.integers(len(scenes)))]
        side = int(rng.integers(400, 801))
        frame = (side, int(side * 3 / 4)) if rng.random() < 0.6 else (int(side * 3 / 4), side)
        composed, placed = paste_placed(img, scene, frame, float(rng.uniform(0.35, 1.0)), rng)
        if crop == "detector":
            out[i], _ = frame_uint8(composed, prep)
        else:
            out[i] = crop_uint8(composed, placed_region(person, img.size, placed, frame), prep)
        bar.add(1)
    return out


def cache_features(args: argparse.Namespace, bottom: keras.Model, prep: Preprocessing, train_images: np.ndarray,
                   pasted: list[np.ndarray], val_images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frozen bottom's output: clean + augmented + pasted-and-augmented train copies, clean val."""
    augmenter = build_augmenter(args.seed)
    print(f"caching features at {args.finetune_from}: 1 clean + {args.augment_copies} augmented + "
          f"{len(pasted)} pasted copies")
    copies = [extract(bottom, train_images, prep, args.batch_size)]
    for k in range(args.augment_copies):
        print(f"augmented copy {k + 1}/{args.augment_copies}")
        copies.append(extract(bottom, train_images, prep, args.batch_size, augmenter))
    for k, images in enumerate(pasted):
        print(f"pasted copy {k + 1}/{len(pasted)}")
        copies.append(extract(bottom, images, prep, args.batch_size, augmenter))
    x_train = np.concatenate(copies)
    del copies
    return x_train, extract(bottom, val_images, prep, args.batch_size)


def train_head(args: argparse.Namespace, top: keras.Model, x_train: np.ndarray, y_train: np.ndarray,
               w_train: np.ndarray, x_val: np.ndarray, val_labels: np.ndarray, val_real: np.ndarray,
               n_classes: int) -> tuple[keras.Model, dict[str, list[float]]]:
    """Phase 1: the head on the pooled features of the frozen top. Returns (head, history)."""
    pooled_model = keras.Sequential([top, keras.layers.GlobalAveragePooling2D()])
    p_train = pooled_model.predict(CachedBatches(x_train, y_train, 128, args.seed, shuffle=False), verbose=1)
    p_val = pooled_model.predict(CachedBatches(x_val, np.zeros(len(x_val)), 128, args.seed, shuffle=False),
                                 verbose=1)
    head = build_head(n_classes, p_train.shape[1])
    head.compile(optimizer=keras.optimizers.Adam(args.lr_head),
                 loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    head_ckpt = args.output.with_name(args.output.stem + ".head.weights.h5")
    print("phase 1: training the head on the frozen base")
    scores = ValScores(p_val, val_labels, val_real, n_classes)
    head.fit(
        p_train, y_train, batch_size=args.batch_size, epochs=args.epochs_head,
        sample_weight=w_train, verbose=1,
        callbacks=[
            scores,
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(head_ckpt, monitor="val_loss", save_best_only=True,
                                            save_weights_only=True),
        ],
    )
    head.load_weights(head_ckpt)
    head_ckpt.unlink(missing_ok=True)
    return head, scores.history


def phase2_callbacks(args: argparse.Namespace, scores: ValScores,
                     checkpoint: keras.callbacks.ModelCheckpoint) -> list:
    """Phase 2's callbacks, in order: the val scores first (the others read them from the logs)."""
    callbacks = [
        scores,
        keras.callbacks.EarlyStopping(monitor=PHASE2_MONITOR, mode="max", patience=args.patience,
                                      restore_best_weights=False),
        checkpoint,
    ]
    if args.lr_drop < 1.0:
        # A constant rate leaves the val score oscillating between epochs; a smaller step once it
        # stalls settles into the basin (the usual step decay), before early stopping gives up.
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=PHASE2_MONITOR, mode="max",
                                                           factor=args.lr_drop,
                                                           patience=args.lr_drop_patience, verbose=1))
    return callbacks


def finetune(args: argparse.Namespace, base: keras.Model, top: keras.Model, head: keras.Model,
             x_train: np.ndarray, y_train: np.ndarray, w_train: np.ndarray, x_val: np.ndarray,
             val_labels: np.ndarray, val_real: np.ndarray, n_classes: int) -> dict:
    """Phase 2: the top blocks + head on the cached bottom output, kept only if it beats
    phase 1 on ``PHASE2_MONITOR``. Returns its history."""
    head_weights = head.get_weights()
    base_weights = base.get_weights()
    base.trainable = True
    top_layers = {id(layer) for layer in top.layers}
    for layer in base.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = id(layer) in top_layers and not is_bn
    inp = keras.Input(x_train.shape[1:], name="cut")
    x = top(inp, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    tune = keras.Model(inp, head(x), name="finetune")
    tune.compile(optimizer=keras.optimizers.Adam(args.lr_finetune),
                 loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    n_trainable = sum(int(np.prod(w.shape)) for w in tune.trainable_weights)
    print(f"phase 2: fine-tuning from {args.finetune_from} ({n_trainable:,} trainable weights)")
    tune_ckpt = args.output.with_name(args.output.stem + ".finetune.weights.h5")
    scores = ValScores(CachedBatches(x_val, np.zeros(len(x_val)), 128, args.seed, shuffle=False), val_labels,
                       val_real, n_classes)
    baseline = scores.scores(tune)[PHASE2_MONITOR]
    print(f"phase 1 {PHASE2_MONITOR} {baseline:.4f}")
    ckpt = keras.callbacks.ModelCheckpoint(tune_ckpt, monitor=PHASE2_MONITOR, mode="max",
                                           save_best_only=True, save_weights_only=True,
                                           initial_value_threshold=baseline)
    tune.fit(
        CachedBatches(x_train, y_train, args.batch_size, args.seed, steps=args.finetune_steps, weights=w_train),
        epochs=args.epochs_finetune, verbose=1, callbacks=phase2_callbacks(args, scores, ckpt),
    )
    history: dict = {"phase2": scores.history}
    if tune_ckpt.exists():
        tune.load_weights(tune_ckpt)
        tune_ckpt.unlink()
        history["phase2_kept"] = True
    else:
        print(f"phase 2 did not beat phase 1 on {PHASE2_MONITOR}; keeping the phase-1 weights")
        history["phase2_kept"] = False
        base.set_weights(base_weights)
        head.set_weights(head_weights)
    return history


def train(args: argparse.Namespace) -> dict:
    """The whole training run; returns the training info (also written as ``*.train.json``)."""
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    prep = Preprocessing(size=(args.input_size, args.input_size), interpolation=args.interpolation,
                         person_crop=person_crop_of(args))
    class_names = class_names_of(args.data / "train") + ([OUTLIER_LABEL] if args.negatives else [])
    n_classes = len(class_names)
    print(f"classes: {class_names}")
    train_items = load_items(args, "train", class_names)
    val_items = load_items(args, "val", class_names)
    originals, persons, train_images, train_found = decode_all(train_items, prep)
    _, _, val_images, val_found = decode_all(val_items, prep)
    train_labels = np.array([c for _, c in train_items], dtype=np.int64)
    val_labels = np.array([c for _, c in val_items], dtype=np.int64)
    scenes = [img for img, (path, _) in zip(originals, train_items, strict=True) if path.parent.name == "no_person"]
    if args.paste_copies and not scenes:
        scenes = [Image.new("RGB", (64, 48), (128, 128, 128))]
    print(f"train {len(train_items)} images, val {len(val_items)} images; person found in "
          f"{train_found.mean():.3f} / {val_found.mean():.3f} ({time.time() - t0:.0f}s to decode)")
    pasted = [pasted_copy(originals, persons, scenes, prep, rng, args.paste_crop) for _ in range(args.paste_copies)]
    del originals, persons

    base = build_base(args.weights, args.input_size)
    base.trainable = False
    cut = base.get_layer(args.finetune_from).input
    bottom = keras.Model(base.input, cut, name="xception_bottom")
    top = keras.Model(cut, base.output, name="xception_top")

    key = cache_key(args, train_images, train_labels, val_images, pasted)
    cache = args.cache_dir / f"features-{key}.npz" if args.cache_dir else None
    if cache is not None and cache.is_file():
        print(f"reusing cached features {cache}")
        with np.load(cache) as z:
            x_train, x_val = z["x_train"], z["x_val"]
    else:
        x_train, x_val = cache_features(args, bottom, prep, train_images, pasted, val_images)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, x_train=x_train, x_val=x_val)
    n_copies = 1 + args.augment_copies + args.paste_copies
    y_train = keras.utils.to_categorical(np.tile(train_labels, n_copies), n_classes)
    train_files = [p for p, _ in train_items]
    val_files = [p for p, _ in val_items]
    train_cgi = synthetic_mask(args.data, train_files)
    val_real = ~synthetic_mask(args.data, val_files) & (val_labels < len(class_names) - (1 if args.negatives else 0))
    w_image = sample_weights(train_labels, train_cgi, n_classes, args.synthetic_weight)
    w_train = np.tile(w_image, n_copies)
    print("weight per image (real / CGI): " + ", ".join(
        f"{name} {w_image[(train_labels == c) & ~train_cgi].max(initial=0):.2f}"
        f"/{w_image[(train_labels == c) & train_cgi].max(initial=0):.2f}" for c, name in enumerate(class_names)))
    print(f"val: {int(val_real.sum())} real in-scope photos")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    head, history1 = train_head(args, top, x_train, y_train, w_train, x_val, val_labels, val_real, n_classes)
    history = {"phase1": history1}
    if args.epochs_finetune > 0:
        history.update(finetune(args, base, top, head, x_train, y_train, w_train, x_val, val_labels, val_real,
                                n_classes))
    for layer in base.layers:
        layer.trainable = False
    model = assemble(base, head)
    # The deployable model must give the same answers as the cached training path.
    logits = model.predict(scale(val_images, prep), batch_size=64, verbose=1)
    final = val_scores(logits, val_labels, val_real, n_classes)
    print("final val: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    model.save(args.output)
    info = {
        "class_names": class_names,
        "outlier_label": OUTLIER_LABEL if args.negatives else None,
        "preprocessing": prep.to_dict(),
        "recipe": {
            "architecture": "Xception(include_top=False, imagenet) -> GAP -> Dense(500, relu) -> "
                            f"Dropout(0.2) -> Dense({n_classes}) logits"
                            + (f" (the last output is '{OUTLIER_LABEL}')" if args.negatives else ""),
            "input_size": args.input_size,
            "person_crop": "every image through the served person crop (yogapose.preprocess)"
                           if prep.person_crop else "none (whole image)",
            "open_set_training": (f"outlier exposure as a class: {args.negatives} train images labelled "
                                  f"'{OUTLIER_LABEL}'") if args.negatives else "none",
            "phase1": f"head only, Adam lr={args.lr_head}, <= {args.epochs_head} epochs",
            "phase2": f"fine-tune from {args.finetune_from} (BatchNorm frozen), Adam lr={args.lr_finetune}, "
                      f"<= {args.epochs_finetune} epochs of {args.finetune_steps} batches"
                      + (f", the rate x {args.lr_drop} after {args.lr_drop_patience} epochs without a better "
                         "val score" if args.lr_drop < 1.0 else ""),
            "augmentation": f"clean + {args.augment_copies} augmented + {args.paste_copies} pasted copies per "
                            "image; augmented: horizontal flip, rotation +/-14deg, zoom +/-15%, shift +/-8%, "
                            "brightness +/-15%, contrast +/-20%; pasted: into a random no_person train scene at "
                            "35-100 % of a 400-800 px frame's height, person-cropped, then augmented",
            "class_weighting": f"balanced over effective counts, a CGI render weighing {args.synthetic_weight} "
                               "of a real photo",
            "early_stopping": "phase 1 on val_loss; phase 2 on the mean of the real val photos' (macro recall + "
                              "worst class recall) / 2 and 1 - the out-of-scope false-positive rate at 95 % "
                              f"in-scope acceptance; patience {args.patience}, best checkpoint kept",
            "batch_size": args.batch_size,
            "seed": args.seed,
            "flags": recipe_flags(args),
        },
        "train_images": len(train_items),
        "val_images": len(val_items),
        "person_found": {"train": round(float(train_found.mean()), 4), "val": round(float(val_found.mean()), 4)},
        "manifest_sha256": file_sha256(args.data / "manifest.csv"),
        "negatives_manifest_sha256": file_sha256(args.negatives / "manifest.csv") if args.negatives else None,
        "final_val": final,
        "history": history,
        "seconds": round(time.time() - t0, 1),
        "versions": {"keras": keras.__version__, "tensorflow": _tf_version(), "numpy": np.__version__},
    }
    args.output.with_suffix(".train.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"saved {args.output} in {time.time() - t0:.0f}s")
    return info


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


def _tf_version() -> str:
    try:
        import tensorflow as tf

        return tf.__version__
    except ImportError:  # pragma: no cover - Keras on another backend
        return "n/a"


if __name__ == "__main__":
    main()
