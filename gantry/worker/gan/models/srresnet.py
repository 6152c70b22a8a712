"""SRResNet (Ledig et al. 2016, "Photo-Realistic Single Image Super-Resolution Using a GAN",
arXiv 1609.04802): the generator of SRGAN, trained alone on a content loss.

G (paper Fig. 4, top), for an LR image I^LR of H x W:

    conv k9n64s1, PReLU                                   -> 64 x H x W        (kept for the long skip)
    B residual blocks: conv k3n64s1, BN, PReLU, conv k3n64s1, BN, + input     (B = 16)
    conv k3n64s1, BN, + the output of the first conv      -> 64 x H x W
    log2(r) x [conv k3n256s1, PixelShuffle(2), PReLU]     -> 64 x rH x rW       (sub-pixel conv, Shi et al.
                                                                                 2016, arXiv 1609.05158)
    conv k9n3s1                                           -> 3 x rH x rW = I^SR

Images are in [-1, 1] on both sides (the paper scales LR to [0, 1]; one range keeps gantry's image
helpers shared). The output layer is linear; pixels are clamped when converted to uint8.

Training data: random HR crops of `image_size` (paper §3.2: 96 x 96, 16 per minibatch) and their
bicubic downsampling by r (`gantry.worker.sr.ops.bicubic_resize`, as MATLAB's imresize does).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import SRResNetOptions, SRResNetTrainSpec
from gantry.worker.gan.loop import images_to_tensor
from gantry.worker.gan.losses import Minibatch, Phase
from gantry.worker.gan.registry import BatchMaker, GANModel, GeneratorParts

log = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus the identity (He et al. 2016, arXiv 1512.03385; paper Fig. 4)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SubPixelUpsample(nn.Module):
    """x2 upsampling: conv to 4C channels at the low resolution, then PixelShuffle(2) rearranges
    them into C channels at twice the resolution (Shi et al. 2016, arXiv 1609.05158). (N, C, H, W) ->
    (N, C, 2H, 2W): the convolution runs at the LR size, which is what makes it cheap."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, 1, 1)  # k3n256s1 at 64 channels
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class Generator(nn.Module):
    """I^LR (N, C, H, W) in [-1, 1] -> I^SR (N, C, rH, rW)."""

    def __init__(
        self, *, blocks: int, channels: int, scale: int, image_channels: int = 3, bicubic_skip: bool = False
    ) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, not {scale}")
        self.blocks, self.scale, self.bicubic_skip = blocks, scale, bicubic_skip
        self.head = nn.Sequential(nn.Conv2d(image_channels, channels, 9, 1, 4), nn.PReLU())
        self.body = nn.Sequential(
            *(ResidualBlock(channels) for _ in range(blocks)),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
        )
        self.upsample = nn.Sequential(*(SubPixelUpsample(channels) for _ in range(int(math.log2(scale)))))
        self.tail = nn.Conv2d(channels, image_channels, 9, 1, 4)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.head(lr)  # (N, 64, H, W)
        features = features + self.body(features)  # the long skip connection of Fig. 4
        sr = self.tail(self.upsample(features))  # (N, C, rH, rW)
        if self.bicubic_skip:  # VDSR's global residual (arXiv 1511.04587), an option outside the paper
            sr = sr + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return sr

    def receptive_radius(self) -> int:
        """LR pixels on each side that can influence an output pixel: how much context a tile
        needs for the tiled result to equal the untiled one (BN is per-pixel in eval mode)."""
        radius = 4 + 2 * self.blocks + 1  # head 9x9, two 3x3 per block, the body's last 3x3
        radius += sum(1 / 2**k for k in range(int(math.log2(self.scale))))  # a 3x3 per x2 stage
        return math.ceil(radius + 4 / self.scale)  # tail 9x9 at the HR size (more than bicubic's 2)


def build_generator(
    spec: SRResNetTrainSpec, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    """G (PyTorch's default init, on the CPU RNG); its input, the "latent", is an LR crop. SRGAN's
    spec has SRResNet's G options, so SRGAN builds its G here too."""
    opts = spec.options
    G = Generator(
        blocks=opts.blocks,
        channels=opts.channels,
        scale=opts.scale,
        image_channels=channels,
        bicubic_skip=opts.bicubic_skip,
    )
    lr_side = spec.image_size // opts.scale
    return GeneratorParts(G=G.to(device), latent_shape=(channels, lr_side, lr_side))


def sr_batches(*, image_size: int, scale: int, augment: bool = False) -> BatchMaker:
    """Minibatches of random HR crops (image_size square) and their bicubic LR (image_size / scale).

    With `augment`, each crop is also transposed or not and rotated by a random multiple of 90
    degrees: one of the 8 symmetries of the square, each equally likely.

    `data.images` is a list of H x W x C arrays of any sizes (`PhotoData`) or an N x H x W x C array.
    Images smaller than the crop are skipped. Everything random comes from the loop's generator.
    """
    from gantry.worker.sr.ops import bicubic_resize

    def make_batch(
        data: object, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Minibatch:
        images = data.images  # type: ignore[attr-defined]
        usable = [i for i, im in enumerate(images) if min(im.shape[:2]) >= image_size]
        if not usable:
            largest = max(min(im.shape[:2]) for im in images)
            raise InvalidInput(
                "image_size",
                f"the HR crop ({image_size}) is larger than every training image (at most {largest})",
            )
        crops = []
        for k in torch.randint(len(usable), (batch_size,), generator=generator).tolist():
            im = images[usable[k]]
            h, w = im.shape[:2]
            top = int(torch.randint(h - image_size + 1, (1,), generator=generator))
            left = int(torch.randint(w - image_size + 1, (1,), generator=generator))
            crop = im[top : top + image_size, left : left + image_size]
            if augment:
                k = int(torch.randint(8, (1,), generator=generator))
                crop = np.rot90(crop.transpose(1, 0, 2) if k >= 4 else crop, k % 4)
            crops.append(np.ascontiguousarray(crop))
        hr = np.stack(crops)  # (N, S, S, C) uint8
        lr = np.stack([bicubic_resize(c, image_size // scale, image_size // scale) for c in crops])
        return Minibatch(real=images_to_tensor(hr, device), z=images_to_tensor(lr, device))

    return make_batch


class ContentLoss(nn.Module):
    """l^SR_X of the paper (eq. 4 and 5): pixel MSE, or MSE of VGG19 relu5_4 features (`vgg54`).

    The VGG features are divided by 12.75, the paper's rescaling that brings the VGG loss to the
    scale of the pixel MSE (§2.2.1, footnote; Ledig et al.'s ~1/12.75)."""

    def __init__(self, vgg: nn.Module | None = None) -> None:
        super().__init__()
        self.vgg = vgg
        if vgg is not None:
            vgg.requires_grad_(False).eval()
            # ImageNet normalisation of [0, 1] RGB, as VGG19 was trained.
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        assert self.vgg is not None
        x = (x.clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.vgg((x - self.mean) / self.std) / 12.75

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return F.mse_loss(sr, hr)
        return F.mse_loss(self._phi(sr), self._phi(hr))


class PixelLoss:
    """SRResNet's only phase, "G": the content loss between G(I^LR) and I^HR."""

    def __init__(self, G: nn.Module, content: ContentLoss) -> None:
        self.G = G
        self.content = content

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        if phase != "G":
            raise ValueError(f"srresnet trains only phase 'G', not {phase!r}")
        loss = self.content(self.G(batch.z), batch.real)
        loss.backward()
        return {"loss_G": loss.detach()}


def content_loss(options: SRResNetOptions, device: torch.device) -> ContentLoss:
    if options.content_loss == "mse":
        return ContentLoss()
    from gantry.worker.sr.vgg import load_vgg54

    assert options.vgg_weights is not None  # the spec requires it with vgg54
    return ContentLoss(load_vgg54(options.vgg_weights, sha256=options.vgg_sha256)).to(device)


def build(spec: SRResNetTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    """G, Adam (paper §3.2: lr 1e-4, beta1 0.9), the content loss, and HR/LR crop minibatches."""
    opts = spec.options
    parts = build_generator(spec, channels=channels, device=device)
    G = parts.G
    return GANModel(
        G=G,
        D=None,
        opt_G=torch.optim.Adam(G.parameters(), lr=opts.lr, betas=(opts.beta1, 0.999)),
        opt_D=None,
        loss=PixelLoss(G, content_loss(opts, device)),
        latent_shape=parts.latent_shape,  # G's input: an LR crop
        phases=("G",),
        make_batch=sr_batches(image_size=spec.image_size, scale=opts.scale, augment=opts.augment),
    )
