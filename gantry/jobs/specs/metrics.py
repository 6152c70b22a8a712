"""The evaluation metrics `gantry evaluate` and the end of training compute: where each applies and
the values it writes. Torch-free: the worker's registry has their code, under the same names.

A metric applies to a train job when its model's spec lists it (`TrainSpec.metrics`), the job's
data set fits (`MetricInfo.fits`) and, for one that reads what G was asked for (`conditional`), the
model is conditioned on the data's labels. A metric with a direction (`better`) can be tracked
during training (`--set eval_every=N eval_metric=NAME`), which keeps the best checkpoint by it. An
Inception metric (`inception`) also needs GANTRY_INCEPTION_WEIGHTS where the job is submitted and run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gantry.jobs.datasets import DATASETS, DatasetKind, dataset_kind


@dataclass(frozen=True)
class MetricInfo:
    description: str
    keys: tuple[str, ...]  # the values it records (metric names in the store)
    datasets: tuple[str, ...] | None = None  # built-in data sets it needs; None: any
    kind: DatasetKind | None = None  # the kind of built-in data it needs; None: any
    auto: bool = False  # also computed at the end of training
    # Keys whose values depend on how G reads codes between two values: with `--code-walk` they are
    # recorded as KEY_<reading> (interpolation_validity_slide), beside the train job's own reading's.
    walk_keys: tuple[str, ...] = ()
    # Which way its first key improves: what `eval_every` keeps the best checkpoint by. None: not
    # tracked during training.
    better: Literal["lower", "higher"] | None = None
    # Needs images with labels: a built-in set that has them, or the user's data (whose labels are
    # checked when it is loaded: the API does not read it).
    labelled: bool = False
    # Reads samples with the labels G was given: a model conditioned on the data's labels only.
    conditional: bool = False
    images: bool = False  # needs image data: a built-in image set or the user's (not 2-D points)
    # Computed in the Inception network's features: needs GANTRY_INCEPTION_WEIGHTS (INCEPTION_WEIGHTS_HELP),
    # which the spec cannot see: the service and the worker check it (`TrainSpec.check_inception_weights`).
    inception: bool = False

    def fits(self, dataset: str) -> bool:
        """Whether a job on `dataset` has the data this metric needs."""
        if self.datasets is not None and dataset not in self.datasets:
            return False
        if self.images and dataset_kind(dataset) == "points":
            return False
        if self.labelled and dataset in DATASETS:
            info = DATASETS[dataset]
            return info.kind == "images" and bool(info.labels)
        return self.kind is None or dataset_kind(dataset) == self.kind

    def improves(self, value: float, best: float) -> bool:
        """Whether `value` of the first key is strictly better than `best` (the metric's direction)."""
        if self.better is None:
            raise ValueError("this metric has no direction: it is not tracked during training")
        return value < best if self.better == "lower" else value > best

    def reading_key(self, key: str, code_walk: str | None) -> str:
        """The name a value is recorded under when read with `--code-walk code_walk`."""
        return f"{key}_{code_walk}" if code_walk and key in self.walk_keys else key


_SHAPES_ACCURACY = "shapes_classifier_accuracy"  # every shapes metric reports its classifier's
# The metrics of gantry's own label classifier report its held-out accuracy when trained on real images.
_REAL_ACCURACY = "real_classifier_accuracy"

# Where the Inception metrics' weights come from: said wherever one is refused for want of them.
INCEPTION_WEIGHTS_HELP = (
    "set GANTRY_INCEPTION_WEIGHTS to a path or s3:// URI of the FID Inception weights, the file "
    "weights-inception-2015-12-05-6726825d.pth of torch-fidelity's GitHub release v0.2.0 (the same file "
    "as pytorch-fid's pt_inception-2015-12-05-6726825d.pth); gantry downloads nothing"
)
_INCEPTION = (
    "; Inception-v3 features of generated images and of the training images (up to 50,000), computed by "
    "torch-fidelity (needs GANTRY_INCEPTION_WEIGHTS)"
)

# metric name -> what it is and where it applies. One entry per metric.
METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo(
        "PSNR (dB) on Y, `scale`-pixel border cropped, of the model and of bicubic (psnr_bicubic), "
        "on the validation images (Ledig et al. 2016, arXiv 1609.04802)",
        keys=("psnr", "psnr_bicubic"),
        auto=True,
    ),
    "ssim": MetricInfo(
        "SSIM on Y (Gaussian window), `scale`-pixel border cropped, of the model and of bicubic "
        "(ssim_bicubic), on the validation images",
        keys=("ssim", "ssim_bicubic"),
        auto=True,
    ),
    "modes_2d": MetricInfo(
        "PacGAN's 2-D protocol on 2,500 samples: modes captured, high_quality (share within 3 std of "
        "the nearest mode), reverse_kl (mode histogram vs uniform) (arXiv 1712.04086)",
        keys=("modes", "high_quality", "reverse_kl"),
        kind="points",
        auto=True,
    ),
    "modes_stacked": MetricInfo(
        "26,000 samples classified channel by channel: modes captured of 1000, kl_uniform, and the "
        "digit classifier's held-out classifier_accuracy (PacGAN Table 2)",
        keys=("modes", "kl_uniform", "classifier_accuracy"),
        datasets=("stacked-digits",),
        auto=True,
    ),
    "caption_faithfulness": MetricInfo(
        "share of images whose classified colour and shape match the prompt, on seen and on held-out "
        "(colour, shape) pairs: faithfulness_seen, faithfulness_held_out (Reed et al. 2016, arXiv 1605.05396)",
        keys=(
            "faithfulness_seen",
            "faithfulness_held_out",
            "colour_faithfulness",
            "shape_faithfulness",
            _SHAPES_ACCURACY,
        ),
        datasets=("shapes",),
    ),
    "prompt_diversity": MetricInfo(
        "distinct sizes/positions (diversity) and backgrounds among 16 images of a prompt that leaves them "
        "free, relative to 16 draws from the data (1.0: as varied as the data)",
        keys=("diversity", "diversity_background", _SHAPES_ACCURACY),
        datasets=("shapes",),
    ),
    "arithmetic_accuracy": MetricInfo(
        "latent arithmetic on classified exemplars (3 seeds per term): share of A1B1 - A1B2 + A2B2 decoded "
        "as A2B1; without text: colour and shape, at fixed text: size and position (arXiv 1511.06434)",
        keys=("arithmetic_accuracy", "arithmetic_trials", _SHAPES_ACCURACY),
        datasets=("shapes",),
        walk_keys=("arithmetic_accuracy", "arithmetic_trials"),
    ),
    "interpolation_validity": MetricInfo(
        "share of frames of spherical walks between random seeds that classify confidently as one shape "
        "of one colour (no ghost of two); the same over the end frames (_ends) and the frames between (_inner)",
        keys=(
            "interpolation_validity",
            "interpolation_validity_ends",
            "interpolation_validity_inner",
            _SHAPES_ACCURACY,
        ),
        datasets=("shapes",),
        walk_keys=("interpolation_validity", "interpolation_validity_ends", "interpolation_validity_inner"),
    ),
    "sample_validity": MetricInfo(
        "share of 1,024 random samples that classify confidently as one shape of one colour, and "
        "pair_coverage: the share of the training (colour, shape) pairs among them",
        keys=("sample_validity", "pair_coverage", _SHAPES_ACCURACY),
        datasets=("shapes",),
    ),
    # Metrics that need no pretrained network, for labelled images (gantry.worker.metrics.classifier):
    # gantry trains a small CNN on the data's labels, its train split, and tests on its held-out split.
    "cas": MetricInfo(
        "Classification Accuracy Score: held-out real accuracy of a classifier trained on the model's samples "
        "with the labels G was given (Ravuri & Vinyals 2019, arXiv 1905.10887); real_classifier_accuracy: "
        "the same classifier trained on real images, the score's ceiling",
        keys=("cas", _REAL_ACCURACY),
        labelled=True,
        conditional=True,
        better="higher",
    ),
    "gan_train": MetricInfo(
        "GAN-train: as cas, a classifier trained on the model's samples and tested on held-out real images "
        "(Shmelkov et al. 2018, arXiv 1807.09499); low when samples lack diversity or realism",
        keys=("gan_train", _REAL_ACCURACY),
        labelled=True,
        conditional=True,
        better="higher",
    ),
    "gan_test": MetricInfo(
        "GAN-test: accuracy of the classifier trained on real images on the model's samples, with the labels "
        "G was given (Shmelkov et al. 2018); near real_classifier_accuracy: samples look like their class",
        keys=("gan_test", _REAL_ACCURACY),
        labelled=True,
        conditional=True,
        better="higher",
    ),
    "fd_classifier": MetricInfo(
        "Frechet distance between held-out real images and samples in the penultimate features of the "
        "classifier gantry trains on the real labels (FID's formula without Inception); 0: alike",
        keys=("fd_classifier", _REAL_ACCURACY),
        labelled=True,
        better="lower",
    ),
    # The field's usual figures for real images, all four from one pass of torch-fidelity
    # (gantry.worker.metrics.inception). precision_recall has no direction: it is two figures that
    # trade against each other (fidelity and coverage), so it is not one a best checkpoint is kept by.
    "fid": MetricInfo(
        "Fréchet Inception Distance, lower is better (Heusel et al. 2017, arXiv 1706.08500)" + _INCEPTION,
        keys=("fid",),
        images=True,
        inception=True,
        better="lower",
    ),
    "kid": MetricInfo(
        "Kernel Inception Distance (Bińkowski et al. 2018, arXiv 1801.01401): mean and std over subsets of "
        "up to 1,000" + _INCEPTION,
        keys=("kid", "kid_std"),
        images=True,
        inception=True,
        better="lower",
    ),
    "inception_score": MetricInfo(
        "Inception Score of the generated images, higher is better, mean and std over 10 splits "
        "(Salimans et al. 2016, arXiv 1606.03498)" + _INCEPTION,
        keys=("inception_score", "inception_score_std"),
        images=True,
        inception=True,
        better="higher",
    ),
    "precision_recall": MetricInfo(
        "improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991), k=3, in the Inception "
        "pool features rather than the paper's VGG16 (not comparable with VGG16 figures)" + _INCEPTION,
        keys=("precision", "recall"),
        images=True,
        inception=True,
    ),
}

# What `eval_every` tracks when `eval_metric` is not set: the first of these that applies (none needs
# downloaded weights, so the default works on any machine). A metric that needs weights (fid) is
# tracked when named: `--set eval_metric=fid`.
EVAL_DEFAULTS: tuple[str, ...] = ("cas", "fd_classifier")
