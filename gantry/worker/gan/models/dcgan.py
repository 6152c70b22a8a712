"""DCGAN (Radford, Metz, Chintala 2015, arXiv 1511.06434), as in pytorch/examples dcgan.

The paper's guidelines (§3): strided convolutions instead of pooling in D and transposed
("fractionally-strided") convolutions instead of upsampling in G (the all-convolutional net,
arXiv 1412.6806); batch norm in both, except G's output layer and D's input layer; no fully
connected hidden layers; ReLU in G with Tanh at the output; LeakyReLU(0.2) in D.

The reference is written for 64x64. Here the number of stride-2 blocks follows `image_size`:
G projects z to 4x4 and doubles the resolution log2(image_size) - 2 times, halving the width
each time so its last hidden layer has `ngf` channels; D mirrors it from `ndf` channels down to
4x4. At 64x64 both are exactly the reference:

    G: z 100x1x1 -> (ngf*8)x4x4 -> (ngf*4)x8x8 -> (ngf*2)x16x16 -> ngf x32x32 -> nc x64x64
    D: nc x64x64 -> ndf x32x32 -> (ndf*2)x16x16 -> (ndf*4)x8x8 -> (ndf*8)x4x4 -> 1x1x1

Option `upsample="nearest"` replaces each of G's stride-2 transposed convolutions by a nearest-
neighbour 2x resize and a 3x3 convolution ("resize-convolution", Odena, Dumoulin & Olah 2016,
"Deconvolution and Checkerboard Artifacts", Distill): no checkerboard pattern, and on `shapes` at
32x32 crisper shapes sooner (bench/RESULTS.md), for 1.3x to 1.4x the step time on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gantry.jobs.specs import BUILTIN_LABELS, DCGANTrainSpec
from gantry.jobs.specs.base import FOLDER_LABELS
from gantry.worker.data import label_space
from gantry.worker.gan import improved
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.losses import NonSaturatingLoss
from gantry.worker.gan.registry import GANModel, GeneratorParts, adam_pair


def _upsample(cin: int, cout: int, mode: str) -> list[nn.Module]:
    """G's 2x upsampling layer: the paper's 4x4 stride-2 transposed conv, or resize then 3x3 conv."""
    if mode == "transposed":
        return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]
    if mode == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
    raise ValueError(f"upsample must be transposed or nearest, not {mode!r}")


def _num_blocks(image_size: int) -> int:
    """Stride-2 blocks between 4x4 and image_size: 2 at 16, 3 at 32, 4 at 64, 5 at 128."""
    if image_size not in (16, 32, 64, 128):
        raise ValueError(f"dcgan supports image sizes 16, 32, 64 and 128, not {image_size}")
    return image_size.bit_length() - 3  # log2(image_size) - 2


class Generator(nn.Module):
    """z (N, nz, 1, 1) -> G(z) (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(
        self, *, nz: int, ngf: int, channels: int, image_size: int, upsample: str = "transposed"
    ) -> None:
        super().__init__()
        n = _num_blocks(image_size)
        width = ngf * 2 ** (n - 1)  # ngf*8 at 64x64
        layers: list[nn.Module] = [
            # The paper's "project and reshape" of z, written as a transposed conv over 1x1.
            nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            # state size. (ngf * 2^(n-1)) x 4 x 4
        ]
        size = 4
        for _ in range(n - 1):
            layers += [
                *_upsample(width, width // 2, upsample),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width, size = width // 2, size * 2
            # state size. width x size x size: (ngf*4) x 8 x 8, (ngf*2) x 16 x 16, ..., ngf x S/2 x S/2
        layers += [
            # No batch norm on G's output layer (paper §3: it made samples oscillate).
            *_upsample(ngf, channels, upsample),
            nn.Tanh(),
            # state size. channels x image_size x image_size
        ]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class Discriminator(nn.Module):
    """x (N, channels, image_size, image_size) -> D(x) as logits (N,): the sigmoid is in the loss."""

    def __init__(self, *, ndf: int, channels: int, image_size: int, batch_norm: bool = True) -> None:
        super().__init__()
        n = _num_blocks(image_size)
        layers: list[nn.Module] = [
            # input is channels x image_size x image_size.
            # No batch norm on D's input layer (paper §3).
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. ndf x S/2 x S/2
        ]
        width = ndf
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                # Without batch norm (d_norm=spectral), build() normalises the convs instead.
                nn.BatchNorm2d(width * 2) if batch_norm else nn.Identity(),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
            # state size. width x size x size: (ndf*2) x S/4 x S/4, ..., (ndf * 2^(n-1)) x 4 x 4
        # A 4x4 valid conv to one logit, instead of a fully connected layer.
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        # state size. 1 x 1 x 1
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer, (N, ndf * 2^(n-1), 4, 4): what feature matching matches."""
        return self.main[:-1](x)

    def from_features(self, h: torch.Tensor) -> torch.Tensor:
        """D(x) from `features(x)`: the last layer alone, so a loss that needs both runs D once."""
        return self.main[-1](h).view(-1)


def init_weights(module: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02); batch-norm gamma ~ N(1, 0.02), beta = 0 (paper §4)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def spectral_norm_convs(D: nn.Module) -> None:
    """Each conv of D divided by its largest singular value (one power iteration a step), so D is
    1-Lipschitz layer by layer without batch statistics (SN-GAN, arXiv 1802.05957). Applied after
    the weights are initialised, to the convs only (a minibatch head keeps its own linear layer)."""
    for module in list(D.modules()):
        if isinstance(module, nn.Conv2d):
            nn.utils.parametrizations.spectral_norm(module)


def _latents(spec: DCGANTrainSpec, values: dict[str, list[str]]) -> CodedLatents:
    """How G's latents are drawn. InfoGAN (gantry.worker.gan.infogan): one-hot codes join z, so G's
    input is nz + Σ codes wide; AC-GAN's label codes (`labels`, one per attribute, sized by the data
    set's `values`) come last."""
    opts = spec.options
    rows = None
    if opts.labels == (FOLDER_LABELS,):  # one class per sub-folder, each drawn alike
        rows = torch.arange(len(values[FOLDER_LABELS]), dtype=torch.int64)[:, None]
    elif opts.labels:
        rows = torch.from_numpy(label_space(spec.dataset, opts.labels))
    return CodedLatents(opts.nz, opts.latent_codes, label_sizes=_label_sizes(spec, values), label_rows=rows)


def _label_values(spec: DCGANTrainSpec, given: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The values of each label attribute G is conditioned on: a built-in data set's, or `given` (the
    classes a folder's sub-folders make, from the data when training, from the checkpoint after)."""
    if spec.options.labels == (FOLDER_LABELS,):
        if not given or FOLDER_LABELS not in given:
            raise ValueError("labels=folder: the data set's sub-folder names are missing")
        return {FOLDER_LABELS: list(given[FOLDER_LABELS])}
    return {name: BUILTIN_LABELS[spec.dataset][name] for name in spec.options.labels}


def _label_sizes(spec: DCGANTrainSpec, values: dict[str, list[str]]) -> tuple[int, ...]:
    return tuple(len(values[name]) for name in spec.options.labels)


def _generator(spec: DCGANTrainSpec, channels: int, latents: CodedLatents) -> Generator:
    """G's network for the spec, with room in z for `latents`' codes (PyTorch's default init)."""
    opts = spec.options
    return Generator(
        nz=latents.latent_shape[0],
        ngf=opts.ngf,
        channels=channels,
        image_size=spec.image_size,
        upsample=opts.upsample,
    )


def _generator_parts(
    G: Generator, spec: DCGANTrainSpec, latents: CodedLatents, device: torch.device
) -> GeneratorParts:
    """G's Improved Techniques (virtual batch norm; historical averaging's means, part of G's state)
    on an initialised G, moved to `device`, with how its latents are drawn."""
    opts = spec.options
    net: nn.Module = G
    if opts.virtual_batch_norm:
        net = improved.virtual_batch_norm(G, latent_shape=latents.latent_shape)
    if opts.historical_averaging > 0:
        improved.historical_average(net)
    return GeneratorParts(
        G=net.to(device),
        latent_shape=latents.latent_shape,
        latent_sampler=latents if latents.all_codes else None,
    )


def build_generator(
    spec: DCGANTrainSpec, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    """G alone, initialised as `build` initialises it (paper §4); `extra`: its checkpoint's, which keeps
    the classes of labels=folder."""
    latents = _latents(spec, _label_values(spec, (extra or {}).get("label_values")))
    G = _generator(spec, channels, latents)
    G.apply(init_weights)
    return _generator_parts(G, spec, latents, device)


def build(
    spec: DCGANTrainSpec,
    *,
    channels: int,
    device: torch.device,
    label_values: dict[str, list[str]] | None = None,
) -> GANModel:
    """Networks, Adam optimizers (paper §4: lr 2e-4, beta1 0.5) and the non-saturating loss.

    G is made by the functions `build_generator` uses, interleaved with D's making in the order the
    global RNG has always been drawn in (G, D, their initialisation, D's minibatch head, G's
    reference batch, D's spectral norm, the loss), so a seed trains the same weights as ever.
    `label_values`: with labels=folder, the data's classes (its sub-folders); the checkpoint keeps them."""
    opts = spec.options
    values = _label_values(spec, label_values)
    latents = _latents(spec, values)
    G = _generator(spec, channels, latents)
    D = Discriminator(
        ndf=opts.ndf, channels=channels, image_size=spec.image_size, batch_norm=opts.d_norm == "batch"
    )
    # Initialise on the CPU (global torch RNG), then move: the same seed gives the same weights
    # on every device.
    G.apply(init_weights)
    D.apply(init_weights)
    # Improved Techniques (arXiv 1606.03498), each off by default: see gantry.worker.gan.improved.
    feature_size = D.main[-1].in_channels * 4 * 4  # D.features(x): (width, 4, 4) for one image
    improved.minibatch_head(D, opts)
    parts = _generator_parts(G, spec, latents, device)
    if opts.d_norm == "spectral":
        spectral_norm_convs(D)
    if improved.uses_improved_loss(opts):
        loss = improved.build_loss(
            parts.G, D, opts, feature_size=feature_size, label_codes=_label_sizes(spec, values)
        )
    else:
        loss = NonSaturatingLoss(parts.G, D)
    D = D.to(device)
    opt_G, opt_D = adam_pair(parts.G, D, lr=opts.lr, betas=(opts.beta1, opts.beta2))
    return GANModel(
        G=parts.G,
        D=D,
        opt_G=opt_G,
        opt_D=opt_D,
        loss=loss,
        latent_shape=parts.latent_shape,
        latent_sampler=parts.latent_sampler,
        labels=opts.labels,
        channels_last_on_cpu=True,
        # Sampling rebuilds G from the checkpoint alone: it keeps the classes of labels=folder.
        extra_state=(lambda: {"label_values": values}) if opts.labels == (FOLDER_LABELS,) else None,
    )
