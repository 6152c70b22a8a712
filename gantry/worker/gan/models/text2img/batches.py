"""text2img's minibatch maker: images with the embeddings of their captions, and z.

Captions, encoder fitting and the caption grammar's facts (which labels a caption names, the words of
z's codes) all come from the data set here; `CaptionBatches.state` is what the checkpoint keeps of
them (`extra_state`), so sampling needs nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import Text2ImgTrainSpec
from gantry.worker.data import CaptionGrammar
from gantry.worker.gan.images import resident_images, scaled
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.losses import Minibatch, on_device
from gantry.worker.gan.models.text2img.codes import CodeWords, code_phrases, free_code_labels, with_free_flags
from gantry.worker.gan.models.text2img.networks import text_dim
from gantry.worker.text.encoders import TextEncoder, fit_encoder

log = logging.getLogger(__name__)

EXAMPLE_CAPTIONS = 8  # training captions kept in the checkpoint: the default text of latent walks


class CaptionBatches:
    """The minibatch maker: images with the embeddings of their captions, and z from `latents`.

    On its first call it fits the text encoder on the data's captions and embeds them all once
    (each distinct caption once); its `state()` is what the checkpoint keeps for sampling.
    `free`: the attributes z carries codes for (`codes.free_code_labels`), as G was built.
    """

    def __init__(
        self,
        spec: Text2ImgTrainSpec,
        latents: CodedLatents,
        *,
        free: tuple[str, ...] = (),
        code_words: CodeWords | None = None,
    ) -> None:
        self.spec = spec
        self.latents = latents
        self.free = free
        self.code_words = code_words
        self.encoder: TextEncoder | None = None
        self.grammar: CaptionGrammar | None = None  # the data's, kept when free_label_codes reads it
        self.examples: list[str] = []
        self._x: torch.Tensor | None = None  # uint8 (N, C, H, W), scaled as a batch is drawn
        self._phi: torch.Tensor | None = None  # (N, E); with code_words, G's [φ ; f] (N, E + A)
        self._labels: torch.Tensor | None = None  # (N, K): the label attributes TAC-GAN's head learns
        self._named: torch.Tensor | None = None  # (N, K) bool: which of them each caption names

    def _prepare(self, data: Any, device: torch.device) -> None:
        from gantry.worker.gan.loop import label_columns

        if not data.captions:
            raise InvalidInput(
                "dataset", "text2img needs captions: use shapes, or an .npz with images and captions"
            )
        opts = self.spec.options
        grammar: CaptionGrammar | None = data.caption_grammar
        if opts.free_label_codes:
            self._check_grammar(grammar)
        n, h, w, _ = data.images.shape
        if (h, w) != (self.spec.image_size, self.spec.image_size):
            raise ValueError(
                f"data images are {h}x{w}, the spec asks for {self.spec.image_size}x{self.spec.image_size}"
            )
        self.encoder = fit_encoder(opts.text_encoder, data.captions, dim=text_dim(self.spec))
        distinct = sorted(set(data.captions))
        row = {text: i for i, text in enumerate(distinct)}
        phi = self.encoder.encode(distinct)  # (distinct captions, E)
        self._phi = phi[torch.tensor([row[text] for text in data.captions])].to(device)
        self._x = resident_images(data.images, device)
        if opts.labels:
            self._labels = label_columns(data, opts.labels).to(device)
            if grammar is not None:  # G is held only to the labels a caption names
                named = grammar.named(data.captions, opts.labels)
                # Where every caption names every label ("a red circle" and `labels=shape,colour`),
                # no mask: every row counts, as the plain cross entropy counts them, to the bit.
                if not named.all():
                    self._named = torch.from_numpy(named).to(device)
        if self.code_words is not None:
            # G's conditioning: [φ ; a flag per coded attribute the caption leaves free]
            assert grammar is not None
            # (Σ values, E), copied onto G's device
            self.code_words.fill(code_phrases(self.encoder, grammar, self.spec, self.free))
            self._phi = with_free_flags(self._phi, data.captions, self.free, grammar)
        self.examples = list(data.captions[:EXAMPLE_CAPTIONS])
        log.info(
            "text2img: %d images, %d distinct captions, %s encoder (E=%d)",
            n,
            len(distinct),
            opts.text_encoder,
            phi.shape[1],
        )

    def _check_grammar(self, grammar: CaptionGrammar | None) -> None:
        """`free_label_codes` reads how the data's captions name its labels; refuse data that does not
        say, or whose captions leave none of the labels free."""
        opts = self.spec.options
        option = "set.code_words" if opts.code_words else "set.free_label_codes"
        if grammar is None:
            raise InvalidInput(
                option,
                f"{option.removeprefix('set.')} needs data whose captions declare their label attributes "
                f"(which words name each label, the words of each value a caption may leave out); "
                f"{self.spec.dataset} declares none (the built-in shapes does)",
            )
        if not free_code_labels(self.spec, grammar):
            raise InvalidInput(
                "set.free_label_codes",
                f"none of {','.join(opts.labels)} is left free by a caption; "
                f"add one of {', '.join(grammar.left_free)} to labels",
            )
        if free_code_labels(self.spec, grammar) != self.free:
            raise ValueError(
                f"the data's captions leave {', '.join(grammar.left_free)} free; "
                f"G was built with codes for {', '.join(self.free) or 'none'}"
            )
        self.grammar = grammar

    def __call__(
        self, data: Any, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Minibatch:
        if self._x is None:
            self._prepare(data, device)
        assert self._x is not None and self._phi is not None
        # With replacement, as the default minibatches: a step's batch depends on the stream alone.
        index = on_device(torch.randint(len(self._x), (batch_size,), generator=generator), device)
        z = self.latents(batch_size, generator)
        labels = self._labels[index] if self._labels is not None else None
        named = self._named[index] if self._named is not None else None
        return Minibatch(
            real=scaled(self._x[index]),
            z=on_device(z, device),
            cond=self._phi[index],
            labels=labels,
            named=named,
        )

    def state(self) -> dict[str, Any]:
        """The fitted encoder, a few training captions and, with free_label_codes, the caption grammar."""
        if self.encoder is None:
            return {}
        state: dict[str, Any] = {"text_encoder": self.encoder.state(), "example_captions": self.examples}
        if self.grammar is not None:
            state["caption_grammar"] = self.grammar.state()
        return state
