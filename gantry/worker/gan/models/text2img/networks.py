"""GAN-CLS's networks (Reed et al. 2016, arXiv 1605.05396, §4.1): a DCGAN (arXiv 1511.06434) whose G
and D both see a text embedding φ(t) of the image's caption. Each network first compresses φ(t) to
`embed_dim` (128 in the paper) with a fully connected layer and a leaky ReLU:

    G: [z ; LReLU(W_g φ(t))] (nz + 128) x 1 x 1 -> the DCGAN generator -> channels x S x S
    D: x -> the DCGAN discriminator's conv stack -> (ndf * 2^(n-1)) x 4 x 4
          ++ LReLU(W_d φ(t)) replicated over the 4 x 4 grid (depth concatenation)
          -> 1x1 conv, batch norm, LReLU -> 4x4 conv -> one logit

`cond_aug` replaces G's projection with StackGAN's conditioning augmentation (Zhang et al. 2017,
arXiv 1612.03242): G sees a draw around the caption's embedding, with its noise taken from z, so
nearby captions ("a red circle", "a large red circle at the top") overlap and z must choose among
what they name.
"""

from __future__ import annotations

import torch
from torch import nn

from gantry.jobs.specs import Text2ImgTrainSpec
from gantry.worker.gan.models.dcgan import Discriminator as DCGANDiscriminator
from gantry.worker.gan.models.dcgan import Generator as DCGANGenerator
from gantry.worker.gan.models.text2img.codes import CodeWords
from gantry.worker.text.encoders import MINILM_DIM


def text_dim(spec: Text2ImgTrainSpec) -> int:
    """E, the size of the encoder's embeddings φ(t)."""
    return MINILM_DIM if spec.options.text_encoder == "minilm" else spec.options.vocab_size


class TextProjection(nn.Module):
    """φ(t) (N, E) -> LReLU(W φ(t)) (N, embed_dim): the paper's compression of the text embedding."""

    def __init__(self, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(text_dim, embed_dim)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(phi))


class ConditioningAugmentation(nn.Module):
    """StackGAN's conditioning augmentation (Zhang et al. 2017, arXiv 1612.03242, §3.1): φ(t) (N, E) ->
    c = μ(φ) + σ(φ) ε (N, embed_dim), a draw from a Gaussian around the caption's embedding, so that
    G sees a neighbourhood of each caption rather than one point.

    The paper draws ε afresh; here ε is a fixed random linear map of z (each component ~ N(0, 1) for
    z ~ N(0, I)), so that the same seed still gives the same image and latent walks move ε with z."""

    def __init__(self, text_dim: int, embed_dim: int, nz: int) -> None:
        super().__init__()
        self.fc = nn.Linear(text_dim, 2 * embed_dim)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        # (nz, embed_dim), N(0, 1/nz): a buffer, so checkpoints carry it; the same for every run.
        mix = torch.randn(nz, embed_dim, generator=torch.Generator().manual_seed(0)) / nz**0.5
        self.register_buffer("noise_map", mix)

    def moments(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²), each (N, embed_dim)."""
        mu, logvar = self.act(self.fc(phi)).chunk(2, dim=1)
        return mu, logvar

    def forward(self, phi: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.moments(phi)
        eps = z.flatten(1) @ self.noise_map.to(z.dtype)  # type: ignore[operator]
        return mu + torch.exp(0.5 * logvar) * eps

    def kl(self, phi: torch.Tensor) -> torch.Tensor:
        """KL(N(μ, σ²) || N(0, I)), averaged over the batch and the dimensions (as StackGAN's code)."""
        mu, logvar = self.moments(phi)
        return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


class TextConditioned(nn.Module):
    """What both of G's forms (this module's `Generator`, `layered.LayeredGenerator`) share: the text's
    projection (or `cond_aug`'s draw around it) and G's input [z ; h] (N, nz + embed_dim); with
    `code_words`, the codes' words join the text first."""

    def __init__(
        self, *, nz: int, text_dim: int, embed_dim: int, cond_aug: bool, code_words: CodeWords | None = None
    ) -> None:
        super().__init__()
        self.project: TextProjection | None = None if cond_aug else TextProjection(text_dim, embed_dim)
        self.augment = ConditioningAugmentation(text_dim, embed_dim, nz) if cond_aug else None
        self.code_words = code_words

    def inputs(self, z: torch.Tensor, phi: torch.Tensor, *, switch: bool | None = None) -> torch.Tensor:
        """[z ; h] as (N, nz + embed_dim, 1, 1); `switch` as `CodeWords`."""
        if self.code_words is not None:
            phi = self.code_words(phi, z, switch=switch)
        if self.augment is not None:  # (N, embed_dim): a draw around the paper's projection (`cond_aug`)
            h = self.augment(phi, z)
        else:
            assert self.project is not None
            h = self.project(phi)  # (N, embed_dim): the paper's projection
        return torch.cat([z, h[:, :, None, None]], dim=1)


class Generator(TextConditioned):
    """G(z, φ(t)): z (N, nz, 1, 1) and φ(t) (N, E; with `code_words` [φ ; f], N x (E + A)) -> images
    (N, channels, S, S) in [-1, 1]."""

    def __init__(
        self,
        *,
        nz: int,
        ngf: int,
        channels: int,
        image_size: int,
        text_dim: int,
        embed_dim: int,
        upsample: str = "transposed",
        cond_aug: bool = False,
        code_words: CodeWords | None = None,
    ) -> None:
        super().__init__(
            nz=nz, text_dim=text_dim, embed_dim=embed_dim, cond_aug=cond_aug, code_words=code_words
        )
        self.body = DCGANGenerator(
            nz=nz + embed_dim, ngf=ngf, channels=channels, image_size=image_size, upsample=upsample
        )

    def forward(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.body(self.inputs(z, phi))  # input (N, nz + embed_dim, 1, 1)


class Discriminator(nn.Module):
    """D(x, φ(t)): images (N, channels, S, S) and φ(t) (N, E) -> logits (N,): "real and matching"."""

    def __init__(self, *, ndf: int, channels: int, image_size: int, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        dcgan = DCGANDiscriminator(ndf=ndf, channels=channels, image_size=image_size)
        self.features = nn.Sequential(*list(dcgan.main)[:-1])  # everything but the last 4x4 conv
        width = dcgan.main[-1].in_channels  # ndf * 2^(n-1), at 4 x 4
        self.project = TextProjection(text_dim, embed_dim)
        self.joint = nn.Sequential(
            # state size. (width + embed_dim) x 4 x 4: image features with the text replicated
            nn.Conv2d(width + embed_dim, width, 1, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 1, 4, 1, 0, bias=False),
            # state size. 1 x 1 x 1
        )

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.judge(self.features(x), phi)

    def judge(self, f: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """D(x, φ(t)) from the image features f = features(x) (N, width, 4, 4): the text joins here."""
        h = self.project(phi)[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])  # (N, embed_dim, 4, 4)
        return self.joint(torch.cat([f, h], dim=1)).view(-1)
