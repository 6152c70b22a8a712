"""The built-in 2-D data sets `ring8` and `grid25`: Gaussian mixtures, the usual mode-collapse tests.

Layouts as in PacGAN (Lin et al. 2017, arXiv 1712.04086, §5.1, after VEEGAN, arXiv 1705.07761):

- `ring8`: 8 equally weighted Gaussians with means on the unit circle, (cos 2πk/8, sin 2πk/8),
  and variance 1e-4 (standard deviation 0.01) in each coordinate;
- `grid25`: 25 equally weighted Gaussians with means at (-4 + 2i, -4 + 2j), i, j = 0..4, and
  variance 0.0025 (standard deviation 0.05).

Points are not images: a trainer gets a `PointData` (float32 N x 2 points, the mode each point
was drawn from, and the layout itself, which the collapse metrics and scatter plots need). Train
and test are drawn from independent random streams of the job's seed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Final

import numpy as np

DEFAULT_COUNT: Final = {"train": 100_000, "test": 2_500}


@dataclass(frozen=True)
class Layout:
    """A mixture of equally weighted isotropic Gaussians."""

    name: str
    means: np.ndarray  # float64 K x 2
    std: float  # standard deviation of every component, per coordinate

    @property
    def modes(self) -> int:
        return len(self.means)


def ring8() -> Layout:
    angles = 2 * math.pi * np.arange(8) / 8
    return Layout("ring8", np.stack([np.cos(angles), np.sin(angles)], axis=1), std=math.sqrt(1e-4))


def grid25() -> Layout:
    i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    means = np.stack([-4.0 + 2 * i.ravel(), -4.0 + 2 * j.ravel()], axis=1)
    return Layout("grid25", means, std=math.sqrt(0.0025))


LAYOUTS: Final = {"ring8": ring8, "grid25": grid25}


def layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"no 2-D layout {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]()


@dataclass
class PointData:
    """2-D points for the MLP GAN: what `ImageData` is for image models."""

    points: np.ndarray  # float32, N x 2
    labels: np.ndarray  # int64, N: the mixture component each point was drawn from
    layout: Layout
    kind: ClassVar[str] = "points"

    def __post_init__(self) -> None:
        if self.points.dtype != np.float32 or self.points.ndim != 2 or self.points.shape[1] != 2:
            raise ValueError(f"points must be float32 N x 2, got {self.points.dtype} {self.points.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.points),):
            raise ValueError(f"labels must be int64 of length {len(self.points)}, got {self.labels.shape}")

    @property
    def channels(self) -> int:
        """Coordinates per point: what the model's `build` gets as `channels`."""
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return len(self.points)


def generate(name: str, *, seed: int = 0, split: str = "train", count: int | None = None) -> PointData:
    """`count` points (default: DEFAULT_COUNT[split]) of mixture `name`, the same for the same seed.
    Drawn once per process and copied after (100,000 points took ~6 ms; a tiny job's budget)."""
    if split not in DEFAULT_COUNT:
        raise ValueError(f"split must be train or test, not {split!r}")
    count = DEFAULT_COUNT[split] if count is None else count
    points, labels = _drawn(name, seed, split, count)
    return PointData(points=points.copy(), labels=labels.copy(), layout=layout(name))


@functools.lru_cache(maxsize=8)
def _drawn(name: str, seed: int, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    mixture = layout(name)
    # One stream per (seed, split): train and test never share points.
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.integers(mixture.modes, size=count)
    points = mixture.means[labels] + mixture.std * rng.standard_normal((count, 2))
    return points.astype(np.float32), labels.astype(np.int64)
