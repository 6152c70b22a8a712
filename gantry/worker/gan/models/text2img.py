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

Captions, encoder fitting and the mismatched text all happen in the model's minibatch maker; the
fitted encoder travels in the checkpoint (`extra_state`), so sampling needs nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import BUILTIN_LABELS, Text2ImgTrainSpec, load_train_spec
from gantry.worker.data import label_space, shapes
from gantry.worker.gan.checkpoint import generator_weights
from gantry.worker.gan.infogan import CodedLatents, InfoHead, LabelHead
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


class Generator(nn.Module):
    """G(z, φ(t)): z (N, nz, 1, 1) and φ(t) (N, E) -> images (N, channels, S, S) in [-1, 1]."""

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
    ) -> None:
        super().__init__()
        self.project: TextProjection | None = None if cond_aug else TextProjection(text_dim, embed_dim)
        self.augment = ConditioningAugmentation(text_dim, embed_dim, nz) if cond_aug else None
        self.body = DCGANGenerator(
            nz=nz + embed_dim, ngf=ngf, channels=channels, image_size=image_size, upsample=upsample
        )

    def forward(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        if self.augment is not None:  # (N, embed_dim): a draw around the paper's projection (`cond_aug`)
            h = self.augment(phi, z)
        else:
            assert self.project is not None
            h = self.project(phi)  # (N, embed_dim): the paper's projection
        return self.body(torch.cat([z, h[:, :, None, None]], dim=1))  # input (N, nz + embed_dim, 1, 1)


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
        G: Generator,
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
        h = batch.cond  # φ(t) of each real image's caption, (N, E)
        if h is None:
            raise ValueError("text2img needs text embeddings in Minibatch.cond")
        if phase == "D":
            fake = self.G(batch.z, h)  # (N, C, H, W); G's graph kept for phase G, as NonSaturatingLoss
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
                fake = self.G(batch.z, h)
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
                h_int = INT_BETA * h + (1 - INT_BETA) * mismatched(h)
                s_int = self.D(self.G(batch.z, h_int), h_int)
                loss_int = F.binary_cross_entropy_with_logits(s_int, torch.ones_like(s_int))
                loss_G = loss_G + loss_int
                stats["loss_G_int"] = loss_int.detach()
            if self.mode_seeking:
                # MSGAN (eq. 3): the same captions from other z (the neighbour's, an independent draw);
                # images that barely differ while their z do are what collapse within a caption looks like.
                z_other = torch.roll(batch.z, shifts=1, dims=0)
                d_image = (self.G(z_other, h) - fake).abs().mean()
                d_z = (z_other - batch.z).abs().mean()
                loss_ms = self.mode_seeking / (d_image / d_z + MODE_SEEKING_EPS)
                loss_G = loss_G + loss_ms
                stats["loss_G_mode_seeking"] = loss_ms.detach()
            if self.cond_aug:  # StackGAN: keep the text's Gaussians near N(0, I)
                assert self.G.augment is not None, "cond_aug needs a G built with it"
                loss_kl = self.G.augment.kl(h)
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

    def __init__(self, spec: Text2ImgTrainSpec) -> None:
        self.spec = spec
        self.latents = coded_latents(spec)
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


def _networks(spec: Text2ImgTrainSpec, channels: int) -> tuple[Generator, Discriminator]:
    opts = spec.options
    sizes = {
        "channels": channels,
        "image_size": spec.image_size,
        "text_dim": text_dim(spec),
        "embed_dim": opts.embed_dim,
    }
    return (
        Generator(
            nz=coded_latents(spec).latent_shape[0],
            ngf=opts.ngf,
            upsample=opts.upsample,
            cond_aug=opts.cond_aug > 0,
            **sizes,
        ),
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
    batches = CaptionBatches(spec)
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

    def __init__(self, state: dict[str, Any], device: torch.device) -> None:
        spec = load_train_spec(state["spec"])
        assert isinstance(spec, Text2ImgTrainSpec)
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
        return phi
