"""Improved Techniques for Training GANs (Salimans et al. 2016, arXiv 1606.03498): layers and a loss.

- `MinibatchDiscrimination` (§3.2): a layer on D's last hidden features that tells D how close
  each sample is to the others in its minibatch, so a G that puts every sample on one point is
  caught at once (mode collapse).
- `ImprovedLoss`: the non-saturating GAN loss with feature matching (§3.1), one-sided label
  smoothing (§3.4), historical averaging (§3.3) and, to show why it is not used, the minimax G loss
  of Goodfellow et al. 2014 (arXiv 1406.2661, §3).
- `HistoricalAverage` (§3.3): the running mean of a network's parameters, kept as buffers so that
  checkpoints carry it and a resumed run continues bit for bit.
- `VirtualBatchNorm` (§3.5): batch norm whose statistics come from a reference batch fixed at the
  start of training (plus the example itself), so G(z) does not depend on the rest of its minibatch.
  `ReferenceBatch` wraps G to run the reference latents in front of every batch.

D networks that take these options expose `features(x)`: the last hidden layer, which feature
matching matches and minibatch discrimination compares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantry.jobs.specs import Codes, ConvNets, GeneratorLoss, ImprovedTechniques
from gantry.worker.gan.infogan import InfoHead
from gantry.worker.gan.losses import Minibatch, Phase

REFERENCE_BATCH = 64  # latents in virtual batch norm's reference batch


class MinibatchDiscrimination(nn.Module):
    """f (N, A) -> [f, o(f)] (N, A + B), o(f)_i,b = Σ_{j≠i} exp(-||M_i,b - M_j,b||_1), M = f T (§3.2).

    T is A x (B·C): B kernels of dimension C (the paper's code: 100 kernels of 5). The sum skips
    j = i, as openai/improved-gan's MinibatchLayer does (it adds 1e6 to the diagonal before exp).
    """

    def __init__(self, in_features: int, *, kernels: int = 100, kernel_dim: int = 5) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        # N(0, 0.05), the scale of the paper's code.
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.05)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        M = (f @ self.T).view(-1, self.kernels, self.kernel_dim).transpose(0, 1)  # (B, N, C)
        # cdist computes the B pairwise L1 matrices without materialising the (N, N, B, C)
        # differences; its backward is several times faster than autograd's through them.
        l1 = torch.cdist(M, M, p=1)  # (B, N, N): ||M_i,b - M_j,b||_1
        c = torch.exp(-l1)  # (B, N, N), 1 on the diagonal
        o = c.sum(2).t() - 1.0  # (N, B): leave out j = i (exp(0) = 1 exactly)
        return torch.cat([f, o], dim=1)


class VirtualBatchNorm(nn.Module):
    """Batch norm with the statistics of a fixed reference batch and the example itself (§3.5).

    The input's first `reference_size` rows are the reference batch (see `ReferenceBatch`). Each
    example x_i is normalised with mean and variance over the reference batch and x_i, weighting
    x_i as one more member: μ_i = (R μ_ref + μ(x_i)) / (R + 1), likewise for E[x²], per channel
    (and, for (N, C, H, W) inputs, over the spatial positions). No running statistics: the same
    computation in training and in eval mode.
    """

    def __init__(
        self, num_features: int, *, reference_size: int = REFERENCE_BATCH, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.reference_size, self.eps = reference_size, eps
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        R = self.reference_size
        spatial = tuple(range(2, x.ndim))  # () for (N, C); (2, 3) for (N, C, H, W)
        own_mean = x.mean(spatial, keepdim=True) if spatial else x  # (N, C, 1, 1) or (N, C)
        own_sq = (x * x).mean(spatial, keepdim=True) if spatial else x * x
        ref_mean = own_mean[:R].mean(0, keepdim=True)  # (1, C, ...)
        ref_sq = own_sq[:R].mean(0, keepdim=True)
        w = 1.0 / (R + 1)
        mean = w * own_mean + (1 - w) * ref_mean
        var = (w * own_sq + (1 - w) * ref_sq - mean * mean).clamp_min(0.0)
        shape = (1, -1) + (1,) * len(spatial)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


class ReferenceBatch(nn.Module):
    """G with virtual batch norm: runs the fixed reference latents z_ref in front of every batch.

    z_ref is drawn once when the model is built (from the seeded global RNG) and saved as a buffer,
    so a checkpoint reproduces G(z) exactly. Costs one extra G forward of REFERENCE_BATCH rows.
    """

    def __init__(self, net: nn.Module, latent_shape: tuple[int, ...], size: int = REFERENCE_BATCH) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("z_ref", torch.randn((size, *latent_shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        R = len(self.z_ref)
        return self.net(torch.cat([self.z_ref, z]))[R:]


class HistoricalAverage(nn.Module):
    """The mean of a network's parameters over every step so far, (1/t) Σ θ[i] (§3.3), as buffers."""

    def __init__(self, parameters: list[nn.Parameter]) -> None:
        super().__init__()
        for i, p in enumerate(parameters):
            self.register_buffer(f"mean_{i}", torch.zeros_like(p.detach()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def penalty(self, parameters: list[nn.Parameter]) -> torch.Tensor:
        """Fold the current θ into the mean, then ||θ - mean||² (the mean held constant)."""
        with torch.no_grad():
            self.count += 1
            for i, p in enumerate(parameters):
                mean = getattr(self, f"mean_{i}")
                mean += (p.detach() - mean) / self.count
        return sum(((p - getattr(self, f"mean_{i}")) ** 2).sum() for i, p in enumerate(parameters))  # type: ignore[return-value]


class ImprovedLoss:
    """The GAN loss of Goodfellow et al. 2014 with the options of Salimans et al. 2016.

    - `real_label`: D's target for real data; < 1 is one-sided label smoothing (§3.4): only the
      real side is smoothed, since smoothing the fake side would reward G's current samples.
    - `feature_matching`: G minimises ||E f(x) - E f(G(z))||² over D's last hidden features f (§3.1)
      instead of fooling D.
    - `minimax`: G minimises log(1 - D(G(z))), the original minimax objective, whose gradient
      vanishes when D rejects fakes confidently (Goodfellow et al. 2014 §3); default: maximise
      log D(G(z)) (non-saturating).
    - `historical_averaging`: weight λ of λ ||θ - (1/t) Σ θ[i]||² in each player's loss (§3.3);
      `history_G` / `history_D` hold the means.
    - `info`: InfoGAN's code head Q (`gantry.worker.gan.infogan`, arXiv 1606.03657): both players
      also minimise its code-reconstruction loss on the fakes (D through its features and Q). Its
      labelled codes (AC-GAN, arXiv 1610.09585) D's side learns from the real images' labels
      instead, and G minimises their loss on the fakes as on the free codes'.

    As `losses.NonSaturatingLoss`, phase "G" reuses the fakes phase "D" made from the same batch.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        *,
        real_label: float = 1.0,
        feature_matching: bool = False,
        minimax: bool = False,
        historical_averaging: float = 0.0,
        history_G: HistoricalAverage | None = None,
        history_D: HistoricalAverage | None = None,
        info: InfoHead | None = None,
    ) -> None:
        if feature_matching and minimax:
            raise ValueError("feature matching replaces G's loss; it cannot be minimax too")
        if historical_averaging and (history_G is None or history_D is None):
            raise ValueError("historical averaging needs history_G and history_D")
        self.G, self.D = G, D
        self.real_label = real_label
        self.feature_matching = feature_matching
        self.minimax = minimax
        self.historical_averaging = historical_averaging
        self.history = {"G": history_G, "D": history_D}
        self.info = info
        self._fake: tuple[Minibatch, torch.Tensor] | None = None

    def _historical_penalty(self, phase: Phase) -> torch.Tensor | None:
        history = self.history[phase]
        if not self.historical_averaging or history is None:
            return None
        net = self.G if phase == "G" else self.D
        return self.historical_averaging * history.penalty(list(net.parameters()))

    def _score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D(x) as logits (N,), and D's last hidden features when the code head needs them (one pass
        through D either way)."""
        if self.info is None:
            return self.D(x), None
        features = self.D.features(x)  # type: ignore[operator]
        return self.D.from_features(features), features  # type: ignore[operator]

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        if phase == "D":
            fake = self.G(batch.z)
            self._fake = (batch, fake)
            learn_labels = self.info is not None and self.info.labelled > 0
            if learn_labels:  # AC-GAN: D's head also learns the real images' labels
                features_real = self.D.features(batch.real)  # type: ignore[operator]
                logits_real = self.D.from_features(features_real)  # type: ignore[operator]
            else:
                logits_real = self.D(batch.real)  # (N,)
            logits_fake, features_fake = self._score(fake.detach())  # (N,)
            target_real = torch.full_like(logits_real, self.real_label)
            loss = F.binary_cross_entropy_with_logits(logits_real, target_real)
            loss = loss + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            stats = {
                "loss_D": loss.detach(),
                "D_x": torch.sigmoid(logits_real.detach()).mean(),
                "D_G_z": torch.sigmoid(logits_fake.detach()).mean(),
            }
            if self.info is not None:
                assert features_fake is not None
                if self.info.labelled < len(self.info.codes):  # free (unlabelled) codes: InfoGAN's term
                    loss_info = self.info.loss(features_fake, batch.z, labelled=False)
                    loss = loss + loss_info
                    stats["loss_info"] = loss_info.detach()
                if learn_labels:
                    if batch.labels is None:
                        raise ValueError("labels: the minibatch carries no labels of the real images")
                    loss_labels = self.info.label_loss(features_real, batch.labels)
                    loss = loss + loss_labels
                    stats["loss_labels"] = loss_labels.detach()
        elif phase == "G":
            if self._fake is not None and self._fake[0] is batch and self._fake[1].requires_grad:
                fake = self._fake[1]
            else:
                fake = self.G(batch.z)
            self._fake = None
            if self.feature_matching:
                features_fake = self.D.features(fake)  # type: ignore[operator]
                with torch.no_grad():
                    f_real = self.D.features(batch.real).flatten(1).mean(0)  # type: ignore[operator]
                f_fake = features_fake.flatten(1).mean(0)
                loss = ((f_real - f_fake) ** 2).sum()
            else:
                logits_fake, features_fake = self._score(fake)
                if self.minimax:  # minimise log(1 - D(G(z))) = -BCE(logits, 0)
                    loss = -F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
                else:  # maximise log D(G(z)) = minimise BCE(logits, 1)
                    loss = F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))
            stats = {"loss_G": loss.detach()}
            if self.info is not None:
                assert features_fake is not None
                loss = loss + self.info.loss(features_fake, batch.z)
        else:
            raise ValueError(f"unknown phase {phase!r}; expected 'D' or 'G'")
        penalty = self._historical_penalty(phase)
        if penalty is not None:
            loss = loss + penalty
            stats[f"hist_avg_{phase}"] = penalty.detach()
        loss.backward()
        return stats


def uses_improved_loss(options: ImprovedTechniques) -> bool:
    """True when any option needs `ImprovedLoss` rather than the plain non-saturating loss."""
    return bool(
        options.feature_matching
        or options.label_smoothing < 1.0
        or options.historical_averaging > 0
        or _minimax(options)
        or (isinstance(options, Codes) and (options.latent_codes or options.labels))
    )


def _minimax(options: ImprovedTechniques) -> bool:
    return isinstance(options, GeneratorLoss) and options.loss == "minimax"


def build_loss(
    G: nn.Module,
    D: nn.Module,
    options: ImprovedTechniques,
    *,
    feature_size: int = 0,
    label_codes: tuple[int, ...] | None = None,
) -> ImprovedLoss:
    """The loss for a model's options; attaches the historical means to G and D, and InfoGAN's code
    head to D (so they are saved, and the head trains with D's optimizer). `feature_size`: the
    number of values in `D.features(x)` for one image, which the code head reads; `label_codes`: the
    sizes of the label attributes G is conditioned on (AC-GAN), the last codes of its latents."""
    weight = options.historical_averaging
    # G's may be there already: it is part of G's state (see the models' `build_generator`).
    history_G = historical_average(G) if weight > 0 else None
    label_sizes = tuple(label_codes or ())
    codes = (options.latent_codes if isinstance(options, Codes) else ()) + label_sizes
    info = None
    if codes:
        if feature_size <= 0:
            raise ValueError("latent_codes and labels need the size of D's features")
        # Codes and labels are options of the convolutional models (InfoGAN's head reads D's features).
        assert isinstance(options, Codes) and isinstance(options, ConvNets)
        info = InfoHead(
            feature_size,
            nz=options.nz,
            codes=codes,
            weight=options.info_weight,
            labelled=len(label_sizes),
        )
        D.info_head = info.to(next(D.parameters()).device)  # type: ignore[assignment]
    # D's mean is taken last, so that it covers the code head too (which trains with D).
    history_D = historical_average(D) if weight > 0 else None
    return ImprovedLoss(
        G,
        D,
        real_label=options.label_smoothing,
        feature_matching=options.feature_matching,
        minimax=_minimax(options),
        historical_averaging=weight,
        history_G=history_G,
        history_D=history_D,
        info=info,
    )


class MinibatchHead(nn.Module):
    """A convolutional D's last layer with minibatch discrimination: features (N, C, 4, 4) ->
    flatten -> `MinibatchDiscrimination` -> Linear -> logits (N, 1), in place of the 4x4 conv."""

    def __init__(self, in_features: int, *, kernels: int, kernel_dim: int) -> None:
        super().__init__()
        self.minibatch = MinibatchDiscrimination(in_features, kernels=kernels, kernel_dim=kernel_dim)
        self.out = nn.Linear(in_features + kernels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.minibatch(h.flatten(1)))


def minibatch_head(D: nn.Module, options: ImprovedTechniques) -> None:
    """D's part of the Improved Techniques on a D built as a `main` Sequential that ends in one conv
    to the logit (DCGAN's): with minibatch discrimination, that last layer becomes a `MinibatchHead`."""
    if options.minibatch_discrimination:
        last = D.main[-1]  # type: ignore[index]  # Conv2d(width, 1, 4): 4x4 features -> one logit
        D.main[-1] = MinibatchHead(  # type: ignore[index]
            last.in_channels * last.kernel_size[0] * last.kernel_size[1],
            kernels=options.mbd_kernels,
            kernel_dim=options.mbd_kernel_dim,
        )


def virtual_batch_norm(G: nn.Module, *, latent_shape: tuple[int, ...]) -> nn.Module:
    """G's part on a G built as a `main` Sequential: its batch norms become virtual ones, run in front
    of a `ReferenceBatch` (whose latents draw from the global RNG). Returns the wrapped G."""
    for i, layer in enumerate(G.main):  # type: ignore[attr-defined, arg-type]
        if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            G.main[i] = VirtualBatchNorm(layer.num_features)  # type: ignore[index]
    return ReferenceBatch(G, latent_shape)


def historical_average(net: nn.Module) -> HistoricalAverage:
    """The running mean of `net`'s parameters, attached to it as `net.historical_average` (so its
    state_dict, and every checkpoint, carries it); the one already attached if there is one."""
    history = getattr(net, "historical_average", None)
    if not isinstance(history, HistoricalAverage):
        history = HistoricalAverage(list(net.parameters())).to(next(net.parameters()).device)
        net.historical_average = history  # type: ignore[assignment]
    return history
