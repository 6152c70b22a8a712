"""The GAN-CLS objective (Reed et al. 2016, arXiv 1605.05396, §4.2, Algorithm 1) and the terms the
options add to it.

The matching-aware discriminator learns from three pairs: real image with its caption (s_r, "real"),
real image with a mismatched caption (s_w, "fake") and generated image with the caption it was made
from (s_f, "fake"):

    L_D = log s_r + (log(1 - s_w) + log(1 - s_f)) / 2,     L_G = log s_f

so D judges whether image and text match, not only whether the image looks real, and G's gradient
carries that. The optional terms, each a method of `GANCLSLoss`:

    interpolation     GAN-INT (§4.3, `gan_int`): G's loss on embeddings half way between two captions
    mode_seeking_term MSGAN (Mao et al. 2019, arXiv 1903.05628, eq. 3, `mode_seeking=λ`)
    kl_term           StackGAN's KL term for conditioning augmentation (`cond_aug=λ`)
    classifier_D/_G   TAC-GAN's auxiliary classifier on D (`labels`), G held to what its caption names
    InfoHead.loss     InfoGAN's code reconstruction (`latent_codes`)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gantry.worker.gan.infogan import CodedLatents, InfoHead, LabelHead
from gantry.worker.gan.losses import Minibatch, Phase
from gantry.worker.gan.models.text2img.codes import CodeWords
from gantry.worker.gan.models.text2img.layered import LayeredGenerator
from gantry.worker.gan.models.text2img.networks import Discriminator, Generator

MODE_SEEKING_EPS = 1e-5  # MSGAN's ε in λ / (d_I / d_z + ε)
INT_BETA = 0.5  # GAN-INT's β (§4.3: "in practice we found that fixing β = 0.5 works well")


def mismatched(phi: torch.Tensor) -> torch.Tensor:
    """Each image's "wrong" caption: its neighbour's in the (randomly drawn) minibatch, φ(t) rolled by
    one. The paper draws random captions; a neighbour may describe the same thing by chance (1 in 28
    for a colour and shape of `shapes`), which only softens the mismatch term a little."""
    return torch.roll(phi, shifts=1, dims=0)


def _bce(logits: torch.Tensor, *, real: bool) -> torch.Tensor:
    """Binary cross-entropy of D's logits (N,) against "real" (1) or "fake" (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


class GANCLSLoss:
    """The GAN-CLS objective with G's non-saturating loss; GAN-INT's term when `gan_int`, MSGAN's when
    `mode_seeking` > 0, StackGAN's KL term when `cond_aug` > 0, and the heads' terms when D has them."""

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

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        cond = batch.cond  # φ(t) of each real image's caption (N, E); with code_words, G's [φ ; f]
        if cond is None:
            raise ValueError("text2img needs text embeddings in Minibatch.cond")
        words: CodeWords | None = getattr(self.G, "code_words", None)
        h = cond if words is None else cond[:, : words.text_dim]  # what D reads: the caption alone
        if phase == "D":
            return self._phase_D(batch, cond, h)
        if phase == "G":
            return self._phase_G(batch, cond, h, words)
        raise ValueError(f"unknown phase {phase!r}; expected 'D' or 'G'")

    # --- the two phases ------------------------------------------------------------------------

    def _phase_D(self, batch: Minibatch, cond: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = self.G(batch.z, cond)  # (N, C, H, W); G's graph kept for phase G, as NonSaturatingLoss
        self._fake = (batch, fake)
        # Matching and mismatched text, in three passes, so batch norm never mixes real and fake
        # (DCGAN reference).
        s_r, f_real = self._score(batch.real, h)  # real image, right text: "real"
        s_w = self.D(batch.real, mismatched(h))  # real image, wrong text: "fake" (the CLS term)
        s_f, f_fake = self._score(fake.detach(), h)  # fake image, right text: "fake"
        loss_real = _bce(s_r, real=True)
        loss_wrong = _bce(s_w, real=False)
        loss_fake = _bce(s_f, real=False)
        loss_D = loss_real + 0.5 * (loss_wrong + loss_fake)  # Algorithm 1, line 9
        # D's heads: InfoGAN's codes from the fakes, TAC-GAN's labels from the reals (only theirs).
        terms: dict[str, torch.Tensor] = {}
        extra = torch.zeros((), device=loss_D.device)
        if self.info is not None:
            assert f_fake is not None
            terms["loss_info"] = self.info.loss(f_fake, batch.z)
            extra = extra + terms["loss_info"]
        if self.label_head is not None:
            assert f_real is not None
            terms["loss_labels"] = self.classifier_D(f_real, batch)
            extra = extra + terms["loss_labels"]
        (loss_D + extra).backward()
        return {
            **{name: term.detach() for name, term in terms.items()},
            "loss_D": loss_D.detach(),
            "D_x": torch.sigmoid(s_r.detach()).mean(),  # mean D(x, h)
            "D_x_wrong_text": torch.sigmoid(s_w.detach()).mean(),  # mean D(x, ĥ): low once D reads text
            "D_G_z": torch.sigmoid(s_f.detach()).mean(),  # mean D(G(z, h), h) before D's step
        }

    def _phase_G(
        self, batch: Minibatch, cond: torch.Tensor, h: torch.Tensor, words: CodeWords | None
    ) -> dict[str, torch.Tensor]:
        if self._fake is not None and self._fake[0] is batch and self._fake[1].requires_grad:
            fake = self._fake[1]
        else:
            fake = self.G(batch.z, cond)
        self._fake = None
        # Matching: G wants D to call its image with its caption real (non-saturating).
        s_f, f_fake = self._score(fake, h)
        loss_G = _bce(s_f, real=True)
        terms: dict[str, torch.Tensor] = {}  # reported beside loss_G (InfoGAN's term is not)
        if self.info is not None:
            assert f_fake is not None
            loss_G = loss_G + self.info.loss(f_fake, batch.z)
        if self.label_head is not None:
            assert f_fake is not None and batch.labels is not None
            terms["loss_labels_G"] = self.classifier_G(f_fake, batch)
            loss_G = loss_G + terms["loss_labels_G"]
        if self.gan_int:
            terms["loss_G_int"] = self.interpolation(batch.z, cond, words)
            loss_G = loss_G + terms["loss_G_int"]
        if self.mode_seeking:
            terms["loss_G_mode_seeking"] = self.mode_seeking_term(batch.z, cond, fake)
            loss_G = loss_G + terms["loss_G_mode_seeking"]
        if self.cond_aug:
            terms["loss_G_kl"] = self.kl_term(batch.z, cond, words)  # reported unweighted
            loss_G = loss_G + self.cond_aug * terms["loss_G_kl"]
        loss_G.backward()
        return {"loss_G": loss_G.detach(), **{name: term.detach() for name, term in terms.items()}}

    # --- the terms -----------------------------------------------------------------------------

    def classifier_D(self, f_real: torch.Tensor, batch: Minibatch) -> torch.Tensor:
        """TAC-GAN: D's classifier learns the real images' labels, from their features (N, width, 4, 4)."""
        if batch.labels is None:
            raise ValueError("labels: the minibatch carries no labels of the real images")
        assert self.label_head is not None
        return self.label_head.loss(f_real, batch.labels)

    def classifier_G(self, f_fake: torch.Tensor, batch: Minibatch) -> torch.Tensor:
        """TAC-GAN for G: its images must show the labels their caption names (and the codes, the rest)."""
        assert self.label_head is not None
        return self.label_head.loss(f_fake, *self._g_targets(batch))

    def interpolation(self, z: torch.Tensor, cond: torch.Tensor, words: CodeWords | None) -> torch.Tensor:
        """GAN-INT (§4.3): embeddings between two captions have no real image, but D still tells whether
        G's image matches them; G learns to fill the text manifold."""
        cond_int = INT_BETA * cond + (1 - INT_BETA) * mismatched(cond)
        h_int = cond_int if words is None else cond_int[:, : words.text_dim]
        s_int = self.D(self.G(z, cond_int), h_int)
        return _bce(s_int, real=True)

    def mode_seeking_term(self, z: torch.Tensor, cond: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """MSGAN (eq. 3): the same captions from other z (the neighbour's, an independent draw); G pays
        λ / (d_I / d_z), since images that barely differ while their z do are what collapse within a
        caption looks like. One more G pass a step; D is left alone."""
        z_other = torch.roll(z, shifts=1, dims=0)
        d_image = (self.G(z_other, cond) - fake).abs().mean()
        d_z = (z_other - z).abs().mean()
        return self.mode_seeking / (d_image / d_z + MODE_SEEKING_EPS)

    def kl_term(self, z: torch.Tensor, cond: torch.Tensor, words: CodeWords | None) -> torch.Tensor:
        """StackGAN: KL(N(μ, σ²) || N(0, I)) keeps the text's Gaussians (`cond_aug`) wide."""
        assert self.G.augment is not None, "cond_aug needs a G built with it"
        return self.G.augment.kl(cond if words is None else words(cond, z))

    # --- helpers -------------------------------------------------------------------------------

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
