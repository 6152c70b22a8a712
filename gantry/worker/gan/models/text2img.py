"""Text to image: GAN-CLS, with GAN-INT as an option (Reed et al. 2016, arXiv 1605.05396).

A DCGAN (arXiv 1511.06434) whose G and D both see a text embedding φ(t) of the image's caption
(`gantry.worker.text`). As in the paper (§4.1), each network first compresses φ(t) to `embed_dim`
(128) with a fully connected layer and a leaky ReLU:

    G: [z ; LReLU(W_g φ(t))] (nz + 128) x 1 x 1 -> the DCGAN generator -> channels x S x S
    D: x -> the DCGAN discriminator's conv stack -> (ndf * 2^(n-1)) x 4 x 4
          ++ LReLU(W_d φ(t)) replicated over the 4 x 4 grid (depth concatenation)
          -> 1x1 conv, batch norm, LReLU -> 4x4 conv -> one logit

The matching-aware discriminator (GAN-CLS, §4.2, Algorithm 1) learns from three pairs: real image
with its caption (s_r, "real"), real image with a mismatched caption (s_w, "fake") and generated image
with the caption it was made from (s_f, "fake"):

    L_D = log s_r + (log(1 - s_w) + log(1 - s_f)) / 2,     L_G = log s_f

so D judges whether image and text match, not only whether the image looks real, and G's gradient
carries that. GAN-INT (§4.3, `gan_int=true`) adds G's loss on embeddings interpolated half way
between two captions of the minibatch (β = 0.5, as the paper), which fills the gaps between the
captions seen in training.

A conditional G tends to ignore z and draw one image per caption: "a red circle" always the same
size, in the same place. `mode_seeking=λ` adds the mode-seeking term of MSGAN (Mao et al. 2019, arXiv
1903.05628, eq. 3): G draws a second image for each caption from another z and pays λ / (d_I / d_z),
where d_I and d_z are the mean absolute differences of the two images and of the two z. It costs one
more G pass a step and leaves D alone. `cond_aug=λ` (StackGAN's conditioning augmentation, Zhang et
al. 2017, arXiv 1612.03242) attacks the same collapse from the text's side: G sees a draw around the
caption's embedding, with its noise taken from z, so nearby captions ("a red circle", "a large red
circle at the top") overlap and z must choose among what they name; λ weighs the KL term that keeps
the draws wide (on `shapes` at λ = 1, for the first 10,000 steps or so: bench/RESULTS.md).

With `labels` (TAC-GAN's classifier on D), G is held to the labels its caption names: "a red circle"
asks for no size, so the size of the image the caption came from does not count. `free_label_codes`
gives z a one-hot code for each labelled attribute a caption may leave free (size, position and
background on `shapes`), and asks G for the code's value where the caption is silent: z then
decides a short prompt's layout, as AC-GAN's label codes decide a labelled dcgan's.

`code_words` lets those codes in through the text too: where a caption leaves an attribute free, G
reads the words of its code's value beside the caption ("a red circle" + "large" + "in the top
left"), the path named captions already teach it. `generator=layered` (LR-GAN, Yang et al. 2017)
draws one object on a smooth background and places it with a spatial transformer whose scale and
centre follow z and the text, so a latent walk slides the object from one place to another instead
of fading one layout into the next.

Captions, encoder fitting and the mismatched text all happen in the model's minibatch maker; the
fitted encoder travels in the checkpoint (`extra_state`), so sampling needs nothing else.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import BUILTIN_LABELS, Text2ImgTrainSpec, load_train_spec
from gantry.worker.data import label_space, shapes
from gantry.worker.gan.checkpoint import generator_weights
from gantry.worker.gan.infogan import CodedLatents, InfoHead, LabelHead, switched
from gantry.worker.gan.losses import Minibatch, Phase
from gantry.worker.gan.models.dcgan import Discriminator as DCGANDiscriminator
from gantry.worker.gan.models.dcgan import Generator as DCGANGenerator
from gantry.worker.gan.models.dcgan import init_weights
from gantry.worker.gan.registry import GANModel, adam_pair
from gantry.worker.text.encoders import MINILM_DIM, TextEncoder, encoder_from_state, fit_encoder

log = logging.getLogger(__name__)

MODE_SEEKING_EPS = 1e-5  # MSGAN's ε in λ / (d_I / d_z + ε)
INT_BETA = (
    0.5  # GAN-INT's interpolation weight (paper §4.3: "in practice we found that fixing β = 0.5 works well")
)
EXAMPLE_CAPTIONS = 8  # training captions kept in the checkpoint: the default text of latent walks


def free_code_labels(spec: Text2ImgTrainSpec) -> tuple[str, ...]:
    """`free_label_codes`: the label attributes that z carries a code for (those captions may leave free)."""
    opts = spec.options
    if not opts.free_label_codes:
        return ()
    return tuple(name for name in opts.labels if name in shapes.LEFT_FREE)


def coded_latents(spec: Text2ImgTrainSpec) -> CodedLatents:
    """How G's latents are drawn: z ~ N(0, I), then InfoGAN's one-hot codes where `latent_codes` asks,
    then a code per attribute of `free_code_labels`, drawn over the combinations the data has."""
    names = free_code_labels(spec)
    if not names:
        return CodedLatents(spec.options.nz, spec.options.latent_codes)
    return CodedLatents(
        spec.options.nz,
        spec.options.latent_codes,
        label_sizes=[len(BUILTIN_LABELS[spec.dataset][name]) for name in names],
        label_rows=torch.from_numpy(label_space(spec.dataset, names)),
    )


def code_phrases(encoder: TextEncoder, names: tuple[str, ...]) -> torch.Tensor:
    """`code_words`: the embeddings of the words for each value of each coded attribute (Σ values, E)."""
    return encoder.encode(
        [shapes.value_phrase(name, value) for name in names for value in shapes.ATTRIBUTES[name]]
    )


def with_free_flags(phi: torch.Tensor, prompts: list[str], names: tuple[str, ...]) -> torch.Tensor:
    """`code_words`: G's conditioning [φ ; f] for prompts (N, E + A), f = 1 where a prompt leaves a
    coded attribute free."""
    free = ~torch.from_numpy(shapes.named_attributes(prompts, names))
    return torch.cat([phi, free.to(phi)], dim=1)


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


class CodeWords(nn.Module):
    """`code_words`: z's label codes (`free_label_codes`) join G's text as the words of their values.

    G's conditioning is [φ(t) ; f] (N, E + A): f (N, A) is 1 for each coded attribute the caption
    leaves free. G reads φ(t) + Σ_a f_a · (c_a @ P_a), where c_a is z's one-hot code for attribute a
    and P_a (values, E) the embeddings of the plain phrasing's words for its values ("large", "in the
    top left"): "a red circle" with a code for large and top left is read as "a red circle" and
    "large in the top left". The codes thus take the path named captions teach G. A latent walk
    between two codes crosses the text between their words (GAN-INT's interpolation, `code_walk=blend`)
    or, with `code_walk=switch`, reads the larger code's words all along and swaps them half way. The
    phrases' embeddings come from the text encoder fitted on the data (`fill`), and travel in G's
    weights."""

    def __init__(self, *, text_dim: int, start: int, sizes: tuple[int, ...], walk: str = "blend") -> None:
        super().__init__()
        self.text_dim, self.start, self.sizes, self.walk = text_dim, start, sizes, walk  # walk: `code_walk`
        self.register_buffer("phrases", torch.zeros(sum(sizes), text_dim))

    def fill(self, phrases: torch.Tensor) -> None:
        """The phrases' embeddings (Σ sizes, E), in code order."""
        self.phrases.copy_(phrases)  # type: ignore[operator]

    def forward(self, cond: torch.Tensor, z: torch.Tensor, *, switch: bool | None = None) -> torch.Tensor:
        """[φ ; f] (N, E + A) and latents z (N, width, 1, 1) -> φ with the free codes' words (N, E);
        `switch` (default: as `code_walk=switch`): a one-hot code as itself, a blend of two as the larger."""
        phi, free = cond[:, : self.text_dim], cond[:, self.text_dim :]
        codes = z.flatten(1)[:, self.start : self.start + sum(self.sizes)].split(self.sizes, dim=1)
        if switch is None:
            switch = self.walk == "switch"
        if switch:
            codes = tuple(map(switched, codes))
        words = [
            (code @ table) * free[:, a : a + 1]
            for a, (code, table) in enumerate(zip(codes, self.phrases.split(self.sizes), strict=True))  # type: ignore[operator]
        ]
        return phi + sum(words, torch.zeros_like(phi))


class _TextConditioned(nn.Module):
    """What both of G's forms share: the text's projection (or `cond_aug`'s draw around it) and G's
    input [z ; h] (N, nz + embed_dim); with `code_words`, the codes' words join the text first."""

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


class Generator(_TextConditioned):
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


# generator=layered: the object's placement. The canvas's half side on the image (both span [-1, 1])
# stays within PLACE_SCALE, and the object within a centred square of the canvas (its mask fades from
# OBJECT_EXTENT to the edge): so the canvas covers at most a little over a quarter of the image, and
# where the object is comes from the transform, not from the canvas. A large shape of `shapes`
# (half extent 0.36 of the image's half side) fits at the largest scale.
PLACE_SCALE: Final = (0.2, 0.55)
OBJECT_EXTENT: Final = 0.8
SUPERSAMPLE: Final = 2  # the layer is resampled at this many times the image's side, then averaged


class LayeredGenerator(_TextConditioned):
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


def mismatched(phi: torch.Tensor) -> torch.Tensor:
    """Each image's "wrong" caption: its neighbour's in the (randomly drawn) minibatch, φ(t) rolled by
    one. The paper draws random captions; a neighbour may describe the same thing by chance (1 in 28
    for a colour and shape of `shapes`), which only softens the mismatch term a little."""
    return torch.roll(phi, shifts=1, dims=0)


class GANCLSLoss:
    """The GAN-CLS objective with G's non-saturating loss; GAN-INT's term when `gan_int`, MSGAN's when
    `mode_seeking` > 0."""

    def __init__(
        self,
        G: Generator | LayeredGenerator,
        D: Discriminator,
        *,
        gan_int: bool = False,
        mode_seeking: float = 0.0,
        cond_aug: float = 0.0,
        free_codes: tuple[CodedLatents, tuple[int, ...]] | None = None,
        info: InfoHead | None = None,
        label_head: LabelHead | None = None,
    ) -> None:
        self.G = G
        self.D = D
        self.gan_int = gan_int
        self.mode_seeking = mode_seeking
        self.cond_aug = cond_aug
        # free_label_codes: how latents are laid out, and which label columns their label codes stand for
        self.free_codes = free_codes
        self.info = info  # InfoGAN's code head (`latent_codes`): read from the image features alone
        self.label_head = label_head  # TAC-GAN's classifier (`labels`): from the image features too
        self._fake: tuple[Minibatch, torch.Tensor] | None = None  # (batch, G(z, h)) from the last phase D

    def _score(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D(x, h) as logits (N,), and x's image features when the code head needs them (one D pass)."""
        if self.info is None and self.label_head is None:
            return self.D(x, h), None
        f = self.D.features(x)
        return self.D.judge(f, h), f

    def _g_targets(self, batch: Minibatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The labels G's images must show, and which of them count: the caption's where it names them;
        with free_label_codes, z's codes where it leaves them free (every row counts then)."""
        assert batch.labels is not None
        if self.free_codes is None or batch.named is None:
            return batch.labels, batch.named
        latents, columns = self.free_codes
        targets = batch.labels.clone()
        for column, value in zip(columns, latents.label_values(batch.z), strict=True):
            targets[:, column] = torch.where(batch.named[:, column], targets[:, column], value)
        return targets, None

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        cond = batch.cond  # φ(t) of each real image's caption (N, E); with code_words, G's [φ ; f]
        if cond is None:
            raise ValueError("text2img needs text embeddings in Minibatch.cond")
        words: CodeWords | None = getattr(self.G, "code_words", None)
        h = cond if words is None else cond[:, : words.text_dim]  # what D reads: the caption alone
        if phase == "D":
            fake = self.G(batch.z, cond)  # (N, C, H, W); G's graph kept for phase G, as NonSaturatingLoss
            self._fake = (batch, fake)
            # Three passes, so batch norm never mixes real and fake (DCGAN reference).
            s_r, f_real = self._score(batch.real, h)  # real image, right text: "real"
            s_w = self.D(batch.real, mismatched(h))  # real image, wrong text: "fake" (the CLS term)
            s_f, f_fake = self._score(fake.detach(), h)  # fake image, right text: "fake"
            loss_real = F.binary_cross_entropy_with_logits(s_r, torch.ones_like(s_r))
            loss_wrong = F.binary_cross_entropy_with_logits(s_w, torch.zeros_like(s_w))
            loss_fake = F.binary_cross_entropy_with_logits(s_f, torch.zeros_like(s_f))
            loss_D = loss_real + 0.5 * (loss_wrong + loss_fake)  # Algorithm 1, line 9
            stats = {}
            extra = torch.zeros((), device=loss_D.device)
            if self.info is not None:
                assert f_fake is not None
                loss_info = self.info.loss(f_fake, batch.z)
                stats["loss_info"] = loss_info.detach()
                extra = extra + loss_info
            if self.label_head is not None:  # D's classifier learns the real images' labels, only theirs
                assert f_real is not None
                if batch.labels is None:
                    raise ValueError("labels: the minibatch carries no labels of the real images")
                loss_labels = self.label_head.loss(f_real, batch.labels)
                stats["loss_labels"] = loss_labels.detach()
                extra = extra + loss_labels
            (loss_D + extra).backward()
            return {
                **stats,
                "loss_D": loss_D.detach(),
                "D_x": torch.sigmoid(s_r.detach()).mean(),  # mean D(x, h)
                "D_x_wrong_text": torch.sigmoid(s_w.detach()).mean(),  # mean D(x, ĥ): low once D reads text
                "D_G_z": torch.sigmoid(s_f.detach()).mean(),  # mean D(G(z, h), h) before D's step
            }
        if phase == "G":
            if self._fake is not None and self._fake[0] is batch and self._fake[1].requires_grad:
                fake = self._fake[1]
            else:
                fake = self.G(batch.z, cond)
            self._fake = None
            s_f, f_fake = self._score(fake, h)
            loss_G = F.binary_cross_entropy_with_logits(s_f, torch.ones_like(s_f))
            stats = {}
            if self.info is not None:
                assert f_fake is not None
                loss_G = loss_G + self.info.loss(f_fake, batch.z)
            if self.label_head is not None:  # G draws the labels its caption names (and the codes, the rest)
                assert f_fake is not None and batch.labels is not None
                loss_labels_G = self.label_head.loss(f_fake, *self._g_targets(batch))
                loss_G = loss_G + loss_labels_G
                stats["loss_labels_G"] = loss_labels_G.detach()
            if self.gan_int:
                # GAN-INT (§4.3): embeddings between two captions have no real image, but D still
                # tells whether G's image matches them; G learns to fill the text manifold.
                cond_int = INT_BETA * cond + (1 - INT_BETA) * mismatched(cond)
                h_int = cond_int if words is None else cond_int[:, : words.text_dim]
                s_int = self.D(self.G(batch.z, cond_int), h_int)
                loss_int = F.binary_cross_entropy_with_logits(s_int, torch.ones_like(s_int))
                loss_G = loss_G + loss_int
                stats["loss_G_int"] = loss_int.detach()
            if self.mode_seeking:
                # MSGAN (eq. 3): the same captions from other z (the neighbour's, an independent draw);
                # images that barely differ while their z do are what collapse within a caption looks like.
                z_other = torch.roll(batch.z, shifts=1, dims=0)
                d_image = (self.G(z_other, cond) - fake).abs().mean()
                d_z = (z_other - batch.z).abs().mean()
                loss_ms = self.mode_seeking / (d_image / d_z + MODE_SEEKING_EPS)
                loss_G = loss_G + loss_ms
                stats["loss_G_mode_seeking"] = loss_ms.detach()
            if self.cond_aug:  # StackGAN: keep the text's Gaussians near N(0, I)
                assert self.G.augment is not None, "cond_aug needs a G built with it"
                loss_kl = self.G.augment.kl(cond if words is None else words(cond, batch.z))
                loss_G = loss_G + self.cond_aug * loss_kl
                stats["loss_G_kl"] = loss_kl.detach()
            loss_G.backward()
            return {"loss_G": loss_G.detach(), **stats}
        raise ValueError(f"unknown phase {phase!r}; expected 'D' or 'G'")


class CaptionBatches:
    """The minibatch maker: images with the embeddings of their captions, and z ~ N(0, I).

    On its first call it fits the text encoder on the data's captions and embeds them all once
    (each distinct caption once); its `state()` is what the checkpoint keeps for sampling.
    """

    def __init__(self, spec: Text2ImgTrainSpec, code_words: CodeWords | None = None) -> None:
        self.spec = spec
        self.latents = coded_latents(spec)
        self.code_words = code_words
        self.encoder: TextEncoder | None = None
        self.examples: list[str] = []
        self._x: torch.Tensor | None = None  # (N, C, H, W) in [-1, 1]
        self._phi: torch.Tensor | None = None  # (N, E)
        self._labels: torch.Tensor | None = None  # (N, K): the label attributes TAC-GAN's head learns
        self._named: torch.Tensor | None = None  # (N, K) bool: which of them each caption names

    def _prepare(self, data: Any, device: torch.device) -> None:
        from gantry.worker.gan.loop import images_to_tensor, label_columns

        if not data.captions:
            raise InvalidInput(
                "dataset", "text2img needs captions: use shapes, or an .npz with images and captions"
            )
        n, h, w, _ = data.images.shape
        if (h, w) != (self.spec.image_size, self.spec.image_size):
            raise ValueError(
                f"data images are {h}x{w}, the spec asks for {self.spec.image_size}x{self.spec.image_size}"
            )
        opts = self.spec.options
        self.encoder = fit_encoder(opts.text_encoder, data.captions, dim=text_dim(self.spec))
        distinct = sorted(set(data.captions))
        row = {text: i for i, text in enumerate(distinct)}
        phi = self.encoder.encode(distinct)  # (distinct captions, E)
        self._phi = phi[torch.tensor([row[text] for text in data.captions])].to(device)
        self._x = images_to_tensor(data.images, device)
        if opts.labels:
            self._labels = label_columns(data, opts.labels).to(device)
            if self.spec.dataset == "shapes":
                named = shapes.named_attributes(data.captions, opts.labels)
                self._named = torch.from_numpy(named).to(device)
            if opts.free_label_codes and not free_code_labels(self.spec):
                raise InvalidInput(
                    "set.free_label_codes",
                    f"none of {','.join(opts.labels)} is left free by a caption; "
                    f"add one of {', '.join(shapes.LEFT_FREE)} to labels",
                )
        if self.code_words is not None:
            # G's conditioning: [φ ; a flag per coded attribute the caption leaves free]
            names = free_code_labels(self.spec)
            self.code_words.fill(code_phrases(self.encoder, names).to(self.code_words.phrases.device))  # type: ignore[union-attr]
            self._phi = with_free_flags(self._phi, list(data.captions), names)
        self.examples = list(data.captions[:EXAMPLE_CAPTIONS])
        log.info(
            "text2img: %d images, %d distinct captions, %s encoder (E=%d)",
            n,
            len(distinct),
            opts.text_encoder,
            phi.shape[1],
        )

    def __call__(
        self, data: Any, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Minibatch:
        if self._x is None:
            self._prepare(data, device)
        assert self._x is not None and self._phi is not None
        # With replacement, as the default minibatches: a step's batch depends on the stream alone.
        index = torch.randint(len(self._x), (batch_size,), generator=generator).to(device)
        z = self.latents(batch_size, generator)
        labels = self._labels[index] if self._labels is not None else None
        named = self._named[index] if self._named is not None else None
        return Minibatch(
            real=self._x[index], z=z.to(device), cond=self._phi[index], labels=labels, named=named
        )

    def state(self) -> dict[str, Any]:
        if self.encoder is None:
            return {}
        return {"text_encoder": self.encoder.state(), "example_captions": self.examples}


def _networks(spec: Text2ImgTrainSpec, channels: int) -> tuple[Generator | LayeredGenerator, Discriminator]:
    opts = spec.options
    sizes = {
        "channels": channels,
        "image_size": spec.image_size,
        "text_dim": text_dim(spec),
        "embed_dim": opts.embed_dim,
    }
    latents = coded_latents(spec)
    nz = latents.latent_shape[0]
    words = (
        CodeWords(
            text_dim=text_dim(spec),
            start=latents.nz + sum(latents.codes),
            sizes=latents.label_sizes,
            walk=opts.code_walk,
        )
        if opts.code_words
        else None
    )
    G: Generator | LayeredGenerator
    if opts.generator == "layered":
        object_sees = nz - sum(latents.label_sizes)  # z without free_label_codes' codes
        G = LayeredGenerator(
            nz=nz,
            ngf=opts.ngf,
            upsample=opts.upsample,
            cond_aug=opts.cond_aug > 0,
            object_sees=object_sees,
            code_words=words,
            **sizes,
        )
    else:
        G = Generator(
            nz=nz, ngf=opts.ngf, upsample=opts.upsample, cond_aug=opts.cond_aug > 0, code_words=words, **sizes
        )
    return (
        G,
        Discriminator(ndf=opts.ndf, **sizes),
    )


def build(spec: Text2ImgTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    """Networks (DCGAN init, paper §4 of arXiv 1511.06434), Adam (lr 2e-4, beta1 0.5) and GAN-CLS."""
    opts = spec.options
    G, D = _networks(spec, channels)
    G.apply(init_weights)  # on the CPU from the global RNG, then moved: the same weights on any device
    D.apply(init_weights)
    info = label_head = None
    width = D.joint[0].out_channels  # the image features are (width, 4, 4)
    if opts.latent_codes:  # InfoGAN's code head, a part of D: saved and optimised with it
        info = D.info_head = InfoHead(
            width * 16, nz=opts.nz, codes=opts.latent_codes, weight=opts.info_weight
        )
    if opts.labels:  # TAC-GAN's auxiliary classifier, a part of D too
        sizes = [len(BUILTIN_LABELS[spec.dataset][name]) for name in opts.labels]
        label_head = D.label_head = LabelHead(width * 16, sizes=sizes, weight=opts.info_weight)
    G, D = G.to(device), D.to(device)
    opt_G, opt_D = adam_pair(G, D, lr=opts.lr, betas=(opts.beta1, opts.beta2))
    batches = CaptionBatches(spec, G.code_words)
    return GANModel(
        G=G,
        D=D,
        opt_G=opt_G,
        opt_D=opt_D,
        loss=GANCLSLoss(
            G,
            D,
            gan_int=opts.gan_int,
            mode_seeking=opts.mode_seeking,
            cond_aug=opts.cond_aug,
            free_codes=(
                (batches.latents, tuple(opts.labels.index(name) for name in free_code_labels(spec)))
                if opts.free_label_codes
                else None
            ),
            info=info,
            label_head=label_head,
        ),
        latent_shape=batches.latents.latent_shape,
        latent_sampler=batches.latents,
        make_batch=batches,
        extra_state=batches.state,
    )


class TextGenerator:
    """A trained G with its text encoder, from a checkpoint: what prompt sampling and latent walks use."""

    def __init__(self, state: dict[str, Any], device: torch.device, *, code_walk: str | None = None) -> None:
        """`code_walk`: read z's codes between two values so rather than as the job was trained to (a
        reading only: the weights are the same; checked at submit against the job's options)."""
        spec = load_train_spec(state["spec"])
        assert isinstance(spec, Text2ImgTrainSpec)
        if code_walk is not None:
            spec = spec.model_copy(
                update={"options": spec.options.model_copy(update={"code_walk": code_walk})}
            )
        extra = state.get("extra") or {}
        if "text_encoder" not in extra:
            raise ValueError("this text2img checkpoint has no text encoder")
        self.spec = spec
        self.latents = coded_latents(spec)
        self.encoder = encoder_from_state(extra["text_encoder"])
        self.example_captions: list[str] = list(extra.get("example_captions", []))
        G, _ = _networks(spec, state["channels"])  # weights overwritten at once: no init needed
        G.load_state_dict(generator_weights(state))
        self.G = G.to(device)
        self.device = device

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """φ(t) for each prompt (N, E); InvalidInput for a prompt the built-in encoder cannot read."""
        unknown_words = getattr(self.encoder, "unknown_words", None)
        if unknown_words is not None:
            for prompt in prompts:
                unknown = unknown_words(prompt)
                if unknown:
                    log.warning(
                        "prompt %r: words not in the training captions, ignored: %s",
                        prompt,
                        ", ".join(unknown),
                    )
        phi = self.encoder.encode(prompts)
        for prompt, row in zip(prompts, phi, strict=True):
            if not row.any():
                known = ", ".join(sorted(getattr(self.encoder, "vocabulary", []))[:40])
                raise InvalidInput(
                    "prompts",
                    f"no word of {prompt!r} was in the training captions (some known words: {known})",
                )
        if self.spec.options.code_words:
            return with_free_flags(phi, prompts, free_code_labels(self.spec))
        return phi
