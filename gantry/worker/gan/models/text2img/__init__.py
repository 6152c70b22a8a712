"""Text to image: GAN-CLS, with GAN-INT as an option (Reed et al. 2016, arXiv 1605.05396).

A DCGAN whose G and D both see a text embedding φ(t) of the image's caption (`gantry.worker.text`),
D judging whether image and caption match. The parts, one module each:

    networks  the text projection, conditioning augmentation (`cond_aug`), G and D
    layered   `generator=layered`: a background and one object placed by a spatial transformer (LR-GAN)
    codes     z's codes for what a caption leaves free (`free_label_codes`) and their words (`code_words`)
    loss      GAN-CLS and its terms: GAN-INT, MSGAN's mode seeking, StackGAN's KL, TAC-GAN, InfoGAN
    batches   the minibatch maker: captions, the fitted text encoder, the data's caption grammar

This module builds them from a spec (`build`, and G alone: `build_generator`) and pairs a trained G
(`checkpoint.load_generator`) with its text encoder (`TextGenerator`). A conditional G tends to
ignore z and draw one image per caption; `mode_seeking`, `cond_aug`, `free_label_codes` and the
layered G each attack that (bench/RESULTS.md).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import BUILTIN_LABELS, Text2ImgTrainSpec
from gantry.worker.data import CaptionGrammar, builtin_caption_grammar
from gantry.worker.gan.infogan import CodedLatents, InfoHead, LabelHead
from gantry.worker.gan.models.dcgan import init_weights
from gantry.worker.gan.models.text2img.batches import EXAMPLE_CAPTIONS, CaptionBatches
from gantry.worker.gan.models.text2img.codes import (
    CodeWords,
    code_phrases,
    coded_latents,
    free_code_labels,
    with_free_flags,
)
from gantry.worker.gan.models.text2img.layered import (
    OBJECT_EXTENT,
    PLACE_SCALE,
    SUPERSAMPLE,
    LayeredGenerator,
)
from gantry.worker.gan.models.text2img.loss import INT_BETA, MODE_SEEKING_EPS, GANCLSLoss, mismatched
from gantry.worker.gan.models.text2img.networks import (
    ConditioningAugmentation,
    Discriminator,
    Generator,
    TextProjection,
    text_dim,
)
from gantry.worker.gan.registry import GANModel, GeneratorParts, adam_pair
from gantry.worker.text.encoders import encoder_from_state

if TYPE_CHECKING:
    from gantry.worker.gan.checkpoint import LoadedGenerator

__all__ = [
    "EXAMPLE_CAPTIONS",
    "INT_BETA",
    "MODE_SEEKING_EPS",
    "OBJECT_EXTENT",
    "PLACE_SCALE",
    "SUPERSAMPLE",
    "CaptionBatches",
    "CodeWords",
    "ConditioningAugmentation",
    "Discriminator",
    "GANCLSLoss",
    "Generator",
    "LayeredGenerator",
    "TextGenerator",
    "TextProjection",
    "build",
    "build_generator",
    "code_phrases",
    "coded_latents",
    "free_code_labels",
    "mismatched",
    "text_dim",
    "with_free_flags",
]

log = logging.getLogger(__name__)


def _generator(spec: Text2ImgTrainSpec, channels: int, latents: CodedLatents) -> Generator | LayeredGenerator:
    """G for the spec, with room in z for `latents`' codes (default PyTorch init)."""
    opts = spec.options
    sizes = {"channels": channels, "image_size": spec.image_size, "text_dim": text_dim(spec)}
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
    if opts.generator == "layered":
        return LayeredGenerator(
            nz=nz,
            ngf=opts.ngf,
            embed_dim=opts.embed_dim,
            upsample=opts.upsample,
            cond_aug=opts.cond_aug > 0,
            object_sees=nz - sum(latents.label_sizes),  # z without free_label_codes' codes
            code_words=words,
            **sizes,
        )
    return Generator(
        nz=nz,
        ngf=opts.ngf,
        embed_dim=opts.embed_dim,
        upsample=opts.upsample,
        cond_aug=opts.cond_aug > 0,
        code_words=words,
        **sizes,
    )


def _grammar(spec: Text2ImgTrainSpec, extra: dict[str, Any] | None) -> CaptionGrammar | None:
    """The caption grammar that sizes G's codes for free labels: to train, the one the data set
    declares (by name: G is built before the data is read; the minibatch maker checks the data's own
    grammar against it); from a checkpoint, the one it was trained with (`stored_grammar`)."""
    if extra is None:
        return builtin_caption_grammar(spec.dataset)
    grammar = stored_grammar(spec, extra)
    if spec.options.free_label_codes and grammar is None:
        raise ValueError("this text2img checkpoint has free_label_codes but no caption grammar")
    return grammar


def build_generator(
    spec: Text2ImgTrainSpec, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    """G alone (DCGAN init), with its coded latents; `extra`: the checkpoint's, whose caption grammar
    sizes the codes. The text encoder that makes G's conditioning is `TextGenerator`'s."""
    latents = coded_latents(spec, free_code_labels(spec, _grammar(spec, extra)))
    G = _generator(spec, channels, latents)
    G.apply(init_weights)
    return GeneratorParts(G=G.to(device), latent_shape=latents.latent_shape, latent_sampler=latents)


def build(spec: Text2ImgTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    """Networks (DCGAN init, paper §4 of arXiv 1511.06434), Adam (lr 2e-4, beta1 0.5) and GAN-CLS.

    G is made by the function `build_generator` uses, then D, then both initialised: the order the
    global RNG has always been drawn in."""
    opts = spec.options
    free = free_code_labels(spec, _grammar(spec, None))
    latents = coded_latents(spec, free)
    G = _generator(spec, channels, latents)
    D = Discriminator(
        ndf=opts.ndf,
        channels=channels,
        image_size=spec.image_size,
        text_dim=text_dim(spec),
        embed_dim=opts.embed_dim,
    )
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
    batches = CaptionBatches(spec, latents, free=free, code_words=G.code_words)
    # free_label_codes: the latents' layout, and the label column each of their label codes stands for
    columns = tuple(opts.labels.index(name) for name in free)
    free_codes = (latents, columns) if opts.free_label_codes else None
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
            free_codes=free_codes,
            info=info,
            label_head=label_head,
        ),
        latent_shape=latents.latent_shape,
        latent_sampler=latents,
        make_batch=batches,
        extra_state=batches.state,
    )


def stored_grammar(spec: Text2ImgTrainSpec, extra: dict[str, Any]) -> CaptionGrammar | None:
    """The caption grammar a checkpoint was trained with: stored beside the text encoder since it was
    kept (with free_label_codes); for older checkpoints, the one their data set declares by name,
    which is what built their G."""
    if "caption_grammar" in extra:
        return CaptionGrammar.from_state(extra["caption_grammar"])
    return builtin_caption_grammar(spec.dataset)


class TextGenerator:
    """A trained G with its text encoder: what prompt sampling and latent walks use."""

    def __init__(self, loaded: LoadedGenerator, *, code_walk: str | None = None) -> None:
        """`loaded`: a text2img checkpoint's G (`checkpoint.load_generator`), whose `extra` holds the
        text encoder. `code_walk`: read z's codes between two values so rather than as the job was
        trained to (a reading only: the weights are the same; checked at submit against the job's
        options)."""
        spec = loaded.spec
        assert isinstance(spec, Text2ImgTrainSpec)
        if code_walk is not None:
            spec = spec.model_copy(
                update={"options": spec.options.model_copy(update={"code_walk": code_walk})}
            )
            if loaded.G.code_words is not None:  # where G reads the option
                loaded.G.code_words.walk = code_walk
        if "text_encoder" not in loaded.extra:
            raise ValueError("this text2img checkpoint has no text encoder")
        self.spec = spec
        self.grammar = stored_grammar(spec, loaded.extra)
        self.free = free_code_labels(spec, self.grammar)
        assert isinstance(loaded.latent_sampler, CodedLatents)
        self.latents: CodedLatents = loaded.latent_sampler
        self.encoder = encoder_from_state(loaded.extra["text_encoder"])
        self.example_captions: list[str] = list(loaded.extra.get("example_captions", []))
        self.G = loaded.G
        self.device = loaded.device

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """φ(t) for each prompt (N, E); with code_words [φ ; f] (N, E + A). InvalidInput for a prompt
        the built-in encoder cannot read."""
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
            assert self.grammar is not None
            return with_free_flags(phi, prompts, self.free, self.grammar)
        return phi
