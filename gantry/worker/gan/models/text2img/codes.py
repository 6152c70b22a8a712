"""z's label codes for what a caption leaves free, and the words G reads for them.

`free_label_codes` gives z a one-hot code for each labelled attribute a caption may leave free (size,
position and background on `shapes`), and asks G (through TAC-GAN's classifier, `loss.py`) for the
code's value where the caption is silent: z then decides a short prompt's layout, as AC-GAN's label
codes decide a labelled dcgan's.

`code_words` lets those codes in through the text too: where a caption leaves an attribute free, G
reads the words of its code's value beside the caption ("a red circle" + "large" + "in the top
left"), the path named captions already teach it.

Which attributes a caption may leave free, the words that name each attribute and the words of each
free value are the data set's: its `CaptionGrammar` (`gantry.worker.data`), which the checkpoint
keeps for sampling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gantry.jobs.specs import BUILTIN_LABELS, Text2ImgTrainSpec
from gantry.worker.data import CaptionGrammar, label_space
from gantry.worker.gan.infogan import CodedLatents, switched
from gantry.worker.text.encoders import TextEncoder


def free_code_labels(spec: Text2ImgTrainSpec, grammar: CaptionGrammar | None) -> tuple[str, ...]:
    """`free_label_codes`: the label attributes that z carries a code for (those captions may leave
    free, as the data's caption grammar declares); () without the option or a grammar."""
    opts = spec.options
    if not opts.free_label_codes or grammar is None:
        return ()
    return tuple(name for name in opts.labels if name in grammar.left_free)


def coded_latents(spec: Text2ImgTrainSpec, free: tuple[str, ...]) -> CodedLatents:
    """How G's latents are drawn: z ~ N(0, I), then InfoGAN's one-hot codes where `latent_codes` asks,
    then a code per attribute of `free` (`free_code_labels`), drawn over the combinations the data has."""
    if not free:
        return CodedLatents(spec.options.nz, spec.options.latent_codes)
    return CodedLatents(
        spec.options.nz,
        spec.options.latent_codes,
        label_sizes=[len(BUILTIN_LABELS[spec.dataset][name]) for name in free],
        label_rows=torch.from_numpy(label_space(spec.dataset, free)),
    )


def code_phrases(
    encoder: TextEncoder, grammar: CaptionGrammar, spec: Text2ImgTrainSpec, free: tuple[str, ...]
) -> torch.Tensor:
    """`code_words`: the embeddings of the words for each value of each coded attribute (Σ values, E),
    in code order."""
    texts = []
    for name in free:
        for value in BUILTIN_LABELS[spec.dataset][name]:
            if value not in grammar.phrases[name]:
                raise ValueError(f"code_words: the data's captions declare no words for {name} {value!r}")
            texts.append(grammar.phrases[name][value])
    return encoder.encode(texts)


def with_free_flags(
    phi: torch.Tensor, prompts: Sequence[str], free: tuple[str, ...], grammar: CaptionGrammar
) -> torch.Tensor:
    """`code_words`: G's conditioning [φ ; f] for prompts (N, E + A), f = 1 where a prompt leaves a
    coded attribute free."""
    flags = ~torch.from_numpy(grammar.named(prompts, free))  # (N, A)
    return torch.cat([phi, flags.to(phi)], dim=1)


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
