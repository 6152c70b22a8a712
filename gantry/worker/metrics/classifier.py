"""Metrics of labelled images that need no pretrained network, read by gantry's own label classifier
(`label_classifier`), trained on the data's labels:

- `cas` (Ravuri & Vinyals 2019, arXiv 1905.10887) and `gan_train` (Shmelkov et al. 2018, arXiv
  1807.09499), the same measure under both names: a classifier trained on a conditional model's
  samples, each labelled with what G was asked for, then tested on held-out real images. Near the
  real-data classifier's accuracy (`real_classifier_accuracy`) when the samples are as varied and
  as recognisable as the data; near chance when they are noise.
- `gan_test` (Shmelkov et al.): the classifier trained on real images, tested on the samples with
  the labels G was given. High with recognisable samples, even a collapsed G's.
- `fd_classifier`: the Fréchet distance (FID's formula, Heusel et al. 2017, arXiv 1706.08500)
  between held-out real images and samples in the real-data classifier's penultimate features.
  Any image model on labelled data: it needs labels to train the classifier, not from G.

Held-out real images: a built-in data set's test split; for the user's data, a fixed HELD_OUT share
(the same images for every job on the same data; the classifier trains on the rest). The real-data
classifier trains on the train split (or the rest), once per data set content (cached).

Accuracy is class-balanced (`label_classifier.balanced_accuracy`): the plain share read right on
data with equally many pictures of each class, and on data where one class is most of it, no
credit for always naming that class. With several label attributes (shapes: shape, colour, ...)
the classifier has a head for each and an accuracy is the mean over the attributes read: those G
was conditioned on for cas / gan_train / gan_test, all of them for `real_classifier_accuracy` of
fd_classifier.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import scipy.linalg
import torch

from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import InvalidInput
from gantry.worker.gan.checkpoint import load_generator
from gantry.worker.gan.sampler import GENERATE_BATCH, generate, generated_images
from gantry.worker.metrics import EvalContext, labelled_train
from gantry.worker.metrics import label_classifier as lc

log = logging.getLogger(__name__)

SAMPLES: Final = 5000  # samples drawn by an evaluate job (eval_every draws eval_samples)
HELD_OUT: Final = 0.2  # the share of the user's data held out for testing
SPLIT_SEED: Final = 0
MAX_REAL: Final = 20_000  # real images per split that a classifier reads at most (a fixed subset)
CHUNK: Final = 4 * GENERATE_BATCH  # samples made per progress report


@dataclass(frozen=True)
class LabelledData:
    """A data set's real images for these metrics: train and held-out test, labels as (N, K) columns."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    attributes: tuple[str, ...]  # the name of each label column
    sizes: tuple[int, ...]  # values per attribute

    def columns(self, names: tuple[str, ...]) -> list[int]:
        """The label columns of the attributes `names` (what a conditional model was trained on)."""
        if len(self.attributes) == 1 and len(names) == 1:
            return [0]  # one label per image: whatever the model calls it
        missing = [name for name in names if name not in self.attributes]
        if missing:
            raise InvalidInput(
                "dataset", f"the data set has no label {missing[0]!r} ({', '.join(self.attributes)})"
            )
        return [self.attributes.index(name) for name in names]


def _subset(n: int, cap: int) -> np.ndarray:
    """A fixed subset of at most `cap` of n rows, in order."""
    return np.arange(n) if n <= cap else np.sort(np.random.default_rng(SPLIT_SEED).permutation(n)[:cap])


def labelled_data(ctx: EvalContext) -> LabelledData:
    """The train job's data set, split for the classifier; InvalidInput when it has no labels."""
    dataset = ctx.train_spec.dataset
    train = labelled_train(ctx.load_data, dataset)
    if train is None:
        raise InvalidInput(
            "dataset",
            f"{dataset} has no labels; cas, gan_train, gan_test and fd_classifier need labelled images "
            "(a built-in set with labels, a folder or .zip with classes in sub-folders, or an .npz with "
            "`labels`)",
        )
    info = DATASETS.get(dataset)
    if info is not None:  # a built-in set: its own held-out split
        test = ctx.load_data("test")
        train_images, train_labels = train.images, lc.as_columns(train.labels)
        test_images, test_labels = test.images, lc.as_columns(test.labels)
        attributes = tuple(info.labels)
        sizes = tuple(len(values) for values in info.labels.values())
    else:
        labels = lc.as_columns(train.labels)
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[
            np.random.default_rng(SPLIT_SEED).permutation(len(labels))[
                : max(1, round(HELD_OUT * len(labels)))
            ]
        ] = True
        train_images, train_labels = train.images[~is_test], labels[~is_test]
        test_images, test_labels = train.images[is_test], labels[is_test]
        width = labels.shape[1]
        attributes = tuple(
            train.attributes or (["label"] if width == 1 else [f"label{k}" for k in range(width)])
        )
        sizes = tuple(int(v) + 1 for v in labels.max(0))
    keep, held = _subset(len(train_images), MAX_REAL), _subset(len(test_images), MAX_REAL)
    return LabelledData(
        train_images[keep], train_labels[keep], test_images[held], test_labels[held], attributes, sizes
    )


def real_classifier(ctx: EvalContext, data: LabelledData) -> tuple[lc.LabelClassifier, list[float]]:
    """The classifier of every attribute trained on the real train images, and its accuracy per
    attribute on the held-out ones: from the cache, or trained and cached."""
    name = lc.content_name(
        data.train_images, data.train_labels, data.test_images, data.test_labels, extra=data.sizes
    )
    cached = ctx.cache.get(name) if ctx.cache is not None else None
    if cached is not None:
        return lc.load(cached, ctx.device)
    classifier = lc.train_classifier(data.train_images, data.train_labels, data.sizes, device=ctx.device)
    predicted = classifier.predict(data.test_images)
    accuracy = lc.balanced_accuracy(predicted, data.test_labels)
    log.info("real-data label classifier: held-out accuracy %s", ", ".join(f"{a:.4f}" for a in accuracy))
    if ctx.cache is not None:
        ctx.cache.put(name, lc.dump(classifier, accuracy))
    return classifier, accuracy


def conditional_samples(ctx: EvalContext, count: int, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`count` samples of the checkpoint's G (uint8 (N, H, W, C)) and the label values G was given
    (int64 (N, K), one column per conditioned attribute): latents drawn as training draws them, with
    their labels rows of `prior` (the real training labels, (M, K)) drawn at random. So the samples
    have the data's classes in the data's proportions: a classifier trained on them meets held-out
    real images of the same prior (CAS on ImageNet draws classes uniformly, which is its prior; on
    data where one class is most of it, uniform draws would score below always naming that class)."""
    loaded = load_generator(ctx.checkpoint, device=ctx.device)
    codes = loaded.codes
    if codes is None or not codes.label_sizes:
        raise InvalidInput("metric", f"a {loaded.spec.model} job without labels has no conditional samples")
    z = loaded.sample_latents(count, torch.Generator().manual_seed(ctx.spec.seed))
    rows = prior[np.random.default_rng(ctx.spec.seed).integers(len(prior), size=count)]
    drawn = torch.from_numpy(rows.astype(np.int64))
    z = codes.with_labels(z, {j: drawn[:, j] for j in range(len(codes.label_sizes))})
    labels = torch.stack(codes.label_values(z), 1).numpy().astype(np.int64)
    return _generate(ctx, loaded.G, z, loaded.device), labels


def samples(ctx: EvalContext, count: int) -> np.ndarray:
    """`count` samples of the checkpoint's G, uint8 (N, H, W, C); a text2img G draws each for a
    caption of the training data (as the Inception metrics do: `generated_images`)."""
    if ctx.train_spec.prompted_by == "captions":  # G loaded there, once
        captions = getattr(ctx.load_data("train"), "captions", None)
        return generated_images(
            ctx.checkpoint, count=count, seed=ctx.spec.seed, captions=captions, device=ctx.device
        )
    loaded = load_generator(ctx.checkpoint, device=ctx.device)
    if loaded.render is not None:
        raise InvalidInput("metric", "the model's samples are not images")
    z = loaded.sample_latents(count, torch.Generator().manual_seed(ctx.spec.seed))
    return _generate(ctx, loaded.G, z, loaded.device)


def _generate(ctx: EvalContext, G: torch.nn.Module, z: torch.Tensor, device: torch.device) -> np.ndarray:
    parts = []
    for start in range(0, len(z), CHUNK):
        parts.append(generate(G, z[start : start + CHUNK], device=device))
        ctx.report(min(start + CHUNK, len(z)), len(z))
    return np.concatenate(parts)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μa - μb||² + Tr(Σa + Σb - 2 (Σa Σb)^½) of features (N, D) and (M, D), as FID computes it
    (pytorch-fid's `calculate_frechet_distance`, float64, with its offset for a singular product)."""
    if min(len(a), len(b)) < 2:
        raise InvalidInput(
            "dataset",
            f"a Fréchet distance needs at least 2 images on each side (here {len(a)} and {len(b)}): "
            "the data set's held-out fifth is too small",
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a singular product (dead ReLU features) is handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
        except np.linalg.LinAlgError:  # SciPy's newer sqrtm raises where older ones returned nan
            covmean = np.full_like(sigma_a, np.nan)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma_a)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(0.0, diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean)))


def trained_on(
    images: np.ndarray, labels: np.ndarray, data: LabelledData, columns: list[int], *, device: torch.device
) -> float:
    """Held-out real accuracy, over the attributes `columns`, of a classifier trained on `images`
    with `labels` (N, len(columns)): CAS and GAN-train when the images are samples."""
    sizes = [data.sizes[c] for c in columns]
    classifier = lc.train_classifier(images, labels, sizes, device=device)
    return classifier.accuracy(data.test_images, data.test_labels[:, columns])


# --- Evaluators (`gantry.worker.metrics.EVALUATORS`) ----------------------------------------------


def trained_on_samples(ctx: EvalContext) -> dict[str, float]:
    """`cas` and `gan_train` (one classifier), and the real-data classifier's accuracy beside them."""
    data = labelled_data(ctx)
    columns = data.columns(ctx.train_spec.options.label_attributes())
    images, labels = conditional_samples(ctx, ctx.samples or SAMPLES, data.train_labels[:, columns])
    score = trained_on(images, labels, data, columns, device=ctx.device)
    _, accuracy = real_classifier(ctx, data)
    real = float(np.mean([accuracy[c] for c in columns]))
    return {"cas": score, "gan_train": score, "real_classifier_accuracy": real}


def gan_test(ctx: EvalContext) -> dict[str, float]:
    data = labelled_data(ctx)
    columns = data.columns(ctx.train_spec.options.label_attributes())
    classifier, accuracy = real_classifier(ctx, data)
    images, labels = conditional_samples(ctx, ctx.samples or SAMPLES, data.train_labels[:, columns])
    return {
        "gan_test": classifier.accuracy(images, labels, heads=columns),
        "real_classifier_accuracy": float(np.mean([accuracy[c] for c in columns])),
    }


def fd_classifier(ctx: EvalContext) -> dict[str, float]:
    data = labelled_data(ctx)
    classifier, accuracy = real_classifier(ctx, data)
    fake = classifier.features(samples(ctx, ctx.samples or SAMPLES))
    return {
        "fd_classifier": frechet_distance(classifier.features(data.test_images), fake),
        "real_classifier_accuracy": float(np.mean(accuracy)),
    }
