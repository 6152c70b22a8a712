"""The original GAN (Goodfellow et al. 2014, arXiv 1406.2661): fully connected G and D.

For 2-D points (`ring8`, `grid25`, PacGAN's benchmarks, arXiv 1712.04086) and small images,
flattened. Like PacGAN's 2-D networks (after VEEGAN's), G has batch norm and ReLU in its hidden
layers and a linear output (points) or Tanh (images); D has LeakyReLU(0.2) hidden layers (the
paper's maxout would do too; LeakyReLU is what the DCGAN-era references use) and one logit.

    G: z (N, nz) -> [Linear(g_width), BN, ReLU] x g_depth -> Linear(out) -> (N, 2) | (N, C, S, S)
    D: x (N, ...) -> flatten -> [Linear(d_width), LeakyReLU] x d_depth  (= D.features(x))
                  -> [minibatch discrimination] -> Linear(1) -> logits (N,)

Improved Techniques (arXiv 1606.03498) are options: see `gantry.worker.gan.improved`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from gantry.jobs.specs import GANTrainSpec
from gantry.worker.data.points import layout
from gantry.worker.gan.improved import (
    MinibatchDiscrimination,
    ReferenceBatch,
    VirtualBatchNorm,
    build_loss,
    historical_average,
)
from gantry.worker.gan.losses import Minibatch, on_device
from gantry.worker.gan.registry import GANModel, GeneratorParts, adam_pair
from gantry.worker.gan.scatter import points_result


class Generator(nn.Module):
    """z (N, nz) -> G(z) (N, *out_shape): points as they are, images in [-1, 1] (Tanh)."""

    def __init__(
        self,
        *,
        nz: int,
        width: int,
        depth: int,
        out_shape: tuple[int, ...],
        batch_norm: bool = False,
        virtual_batch_norm: bool = False,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.out_shape, self.scale = out_shape, scale
        layers: list[nn.Module] = []
        fan_in = nz
        for _ in range(depth):
            # Virtual batch norm (§3.5 of arXiv 1606.03498) takes batch norm's place; its statistics
            # come from the reference rows that `ReferenceBatch` puts in front of each batch.
            layers.append(nn.Linear(fan_in, width))
            if virtual_batch_norm:
                layers.append(VirtualBatchNorm(width))
            elif batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(True))
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(out_shape)))
        if len(out_shape) == 3:
            layers.append(nn.Tanh())  # images live in [-1, 1]; points are unbounded
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z).view(-1, *self.out_shape) * self.scale


class Discriminator(nn.Module):
    """x (N, ...) -> logits (N,); `features(x)` is the last hidden layer (N, d_width)."""

    def __init__(
        self,
        *,
        in_features: int,
        width: int,
        depth: int,
        minibatch_kernels: int = 0,
        kernel_dim: int = 5,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.LeakyReLU(0.2, inplace=True)]
            fan_in = width
        self.body = nn.Sequential(*layers)
        # Minibatch discrimination (§3.2) goes between the last hidden layer and the logit, as in
        # the paper's code: the logit sees each sample's features and its closeness to the others.
        self.minibatch = (
            MinibatchDiscrimination(width, kernels=minibatch_kernels, kernel_dim=kernel_dim)
            if minibatch_kernels
            else None
        )
        self.out = nn.Linear(width + minibatch_kernels, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x / self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (N, d_width)
        if self.minibatch is not None:
            f = self.minibatch(f)  # (N, d_width + B)
        return self.out(f).view(-1)


class PointBatches:
    """Minibatches of 2-D points: `data.points` drawn with replacement and z ~ N(0, I).

    The points are moved to the device once, on the first batch of a data set (the loop calls this
    with the same data object every step).
    """

    def __init__(self, latent_shape: tuple[int, ...]) -> None:
        self.latent_shape = latent_shape
        self._cache: tuple[Any, torch.Tensor] | None = None

    def __call__(
        self, data: Any, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Minibatch:
        if self._cache is None or self._cache[0] is not data:
            self._cache = (data, torch.from_numpy(np.ascontiguousarray(data.points)).to(device))
        x_all = self._cache[1]  # (N, 2)
        index = torch.randint(len(x_all), (batch_size,), generator=generator)
        z = torch.randn((batch_size, *self.latent_shape), generator=generator)
        return Minibatch(real=x_all[on_device(index, device)], z=on_device(z, device))


def _out_shape_and_scale(spec: GANTrainSpec, channels: int) -> tuple[tuple[int, ...], float]:
    """G's output shape, and the unit G and D work in: 2-D layouts span [-1, 1] (ring) or [-4, 4]
    (grid), so they work in units of the layout's extent, and the same learning rate resolves a
    0.01-wide ring mode and a 0.05-wide grid one."""
    out_shape = (channels,) if spec.points else (channels, spec.image_size, spec.image_size)
    scale = float(abs(layout(spec.dataset).means).max()) if spec.points else 1.0
    return out_shape, scale


def build_generator(
    spec: GANTrainSpec, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    """G (with virtual batch norm's reference batch, and historical averaging's means: both part of
    G's state), and for 2-D data the renderer of its points as files and a scatter plot."""
    opts = spec.options
    out_shape, scale = _out_shape_and_scale(spec, channels)
    G: nn.Module = Generator(
        nz=opts.nz,
        width=opts.g_width,
        depth=opts.g_depth,
        out_shape=out_shape,
        batch_norm=opts.batch_norm,
        virtual_batch_norm=opts.virtual_batch_norm,
        scale=scale,
    )
    if opts.virtual_batch_norm:
        G = ReferenceBatch(G, (opts.nz,))
    if opts.historical_averaging > 0:
        historical_average(G)
    render = None
    if spec.points:
        mixture = layout(spec.dataset)
        render = lambda outputs: points_result(outputs.numpy(), mixture)  # noqa: E731
    return GeneratorParts(G=G.to(device), latent_shape=(opts.nz,), render=render)


def build(spec: GANTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    """G, D, Adam optimizers, the loss, and for 2-D data the point batches and scatter plots."""
    opts = spec.options
    parts = build_generator(spec, channels=channels, device=device)
    out_shape, scale = _out_shape_and_scale(spec, channels)
    D = Discriminator(
        in_features=math.prod(out_shape),
        width=opts.d_width,
        depth=opts.d_depth,
        minibatch_kernels=opts.mbd_kernels if opts.minibatch_discrimination else 0,
        kernel_dim=opts.mbd_kernel_dim,
        scale=scale,
    )
    loss = build_loss(parts.G, D, opts)  # may attach historical means to D: move it after
    D = D.to(device)
    opt_G, opt_D = adam_pair(parts.G, D, lr=opts.lr, betas=(opts.beta1, opts.beta2))
    return GANModel(
        G=parts.G,
        D=D,
        opt_G=opt_G,
        opt_D=opt_D,
        loss=loss,
        latent_shape=parts.latent_shape,
        make_batch=PointBatches(parts.latent_shape) if spec.points else None,
        render=parts.render,
    )
