"""`generator=layered`: G as a background and one object placed on it (LR-GAN, Yang et al. 2017, arXiv
1703.01560). A spatial transformer whose scale and centre follow z and the text places the object, so
a latent walk slides the object from one place to another instead of fading one layout into the next.
"""

from __future__ import annotations

from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

from gantry.worker.gan.models.dcgan import Generator as DCGANGenerator
from gantry.worker.gan.models.text2img.codes import CodeWords
from gantry.worker.gan.models.text2img.networks import TextConditioned

# generator=layered: the object's placement. The canvas's half side on the image (both span [-1, 1])
# stays within PLACE_SCALE, and the object within a centred square of the canvas (its mask fades from
# OBJECT_EXTENT to the edge): so the canvas covers at most a little over a quarter of the image, and
# where the object is comes from the transform, not from the canvas. A large shape of `shapes`
# (half extent 0.36 of the image's half side) fits at the largest scale.
PLACE_SCALE: Final = (0.2, 0.55)
OBJECT_EXTENT: Final = 0.8
SUPERSAMPLE: Final = 2  # the layer is resampled at this many times the image's side, then averaged


class LayeredGenerator(TextConditioned):
    """G(z, φ(t)) as a background and one object layer put on it (LR-GAN, Yang et al. 2017, arXiv
    1703.01560, with one object and scale and translation only):

        [z ; h]  -> MLP -> a 4 x 4 background, bilinearly resized to S x S (smooth, it cannot draw a shape)
        [z' ; h] -> the DCGAN generator -> an object canvas: colour (channels) and mask in [0, 1]
        [z' ; h] -> MLP -> the object's scale and centre: an affine map of the canvas onto the image
        image = mask' · colour' + (1 - mask') · background        (' : after the map)

    z' is z without free_label_codes' codes: those reach the object only through the text
    (`code_words`), the path named captions teach, so the canvas cannot answer a position code by
    drawing at its own edge (what it did when it saw them).

    The map is a spatial transformer (Jaderberg et al. 2015, arXiv 1506.02025): its parameters are
    continuous in z and learnt through bilinear resampling, so a latent walk moves and scales one
    object instead of fading one layout into another."""

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
        object_sees: int | None = None,
        code_words: CodeWords | None = None,
    ) -> None:
        super().__init__(
            nz=nz, text_dim=text_dim, embed_dim=embed_dim, cond_aug=cond_aug, code_words=code_words
        )
        width = nz + embed_dim
        self.channels = channels
        self.image_size = image_size
        # The canvas and the placement see the first `object_sees` entries of z (all by default): z'.
        self.object_sees = nz if object_sees is None else object_sees
        self.object = DCGANGenerator(
            nz=self.object_sees + embed_dim,
            ngf=ngf,
            channels=channels + 1,
            image_size=image_size,
            upsample=upsample,
        )
        self.background = nn.Sequential(
            nn.Linear(width, 4 * ngf), nn.ReLU(True), nn.Linear(4 * ngf, channels * 16), nn.Tanh()
        )
        self.place = nn.Sequential(
            nn.Linear(self.object_sees + embed_dim, 4 * ngf), nn.ReLU(True), nn.Linear(4 * ngf, 3)
        )
        # Start every object at the centre, at the middle of the scale range.
        nn.init.zeros_(self.place[-1].weight)
        nn.init.zeros_(self.place[-1].bias)
        pixel = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
        extent = torch.maximum(pixel[None, :].abs(), pixel[:, None].abs())
        window = ((1 - extent) / (1 - OBJECT_EXTENT)).clamp(0, 1)
        self.register_buffer("window", window[None, None], persistent=False)

    def placement(self, seen: torch.Tensor) -> torch.Tensor:
        """The affine maps (N, 2, 3) from image coordinates to canvas coordinates, from [z' ; h] (N, width')."""
        raw = self.place(seen).float()
        low, high = PLACE_SCALE
        scale = low + (high - low) * torch.sigmoid(raw[:, 0])  # the canvas's half side on the image
        centre = torch.tanh(raw[:, 1:])  # (N, 2): x, y on the image
        theta = torch.zeros(len(seen), 2, 3, device=seen.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -centre / scale[:, None]
        return theta

    def layers(self, z: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G's parts before they are put together: the object's canvas (N, channels + 1, S, S) with its
        mask last, in [-1, 1]; the placement (N, 2, 3) as `placement`; the background (N, channels, S, S)."""
        x = self.inputs(z, phi)  # (N, width, 1, 1)
        n, c, s = len(x), self.channels, self.image_size

        def object_view(x: torch.Tensor) -> torch.Tensor:  # [z' ; h] (N, width', 1, 1) of [z ; h]
            return torch.cat([x[:, : self.object_sees], x[:, z.shape[1] :]], dim=1)

        seen = object_view(x)
        background = self.background(x.flatten(1)).float().view(n, c, 4, 4)
        background = F.interpolate(background, size=(s, s), mode="bilinear", align_corners=False)
        drawn = seen  # what the canvas reads
        if self.code_words is not None and self.code_words.walk == "slide":
            # The object is drawn from the larger code's words and placed from the blend: along a walk
            # it keeps its drawing while it slides and scales.
            drawn = object_view(self.inputs(z, phi, switch=True))
        return self.object(drawn).float(), self.placement(seen.flatten(1)), background

    def forward(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        canvas, theta, background = self.layers(z, phi)
        n, c, s = len(canvas), self.channels, self.image_size
        mask = (canvas[:, c:] + 1) / 2 * self.window  # type: ignore[operator]
        layer = torch.cat([canvas[:, :c] * mask, mask], dim=1)  # colour premultiplied by its mask
        grid = F.affine_grid(theta, [n, c + 1, SUPERSAMPLE * s, SUPERSAMPLE * s], align_corners=False)
        layer = F.avg_pool2d(F.grid_sample(layer, grid, align_corners=False), SUPERSAMPLE)
        return layer[:, :c] + (1 - layer[:, c:]) * background
