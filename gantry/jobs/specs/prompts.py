"""Prompts for a model trained with `labels` (a dcgan: AC-GAN): "a large red circle top left" names label values.

A prompt is read word by word against the values of the attributes the model was conditioned on
(`BUILTIN_LABELS`): "red" is a colour, "top left" a position (longer phrases are matched first),
and `NAME=VALUE` names an attribute outright where a value alone is ambiguous (`stacked-digits`:
"red=3 green=1"). A few filler words ("a", "in", "on", "the", "background", ...) are skipped;
anything else is refused, naming the word and the values allowed. Attributes a prompt leaves out
are drawn as in plain sampling. Torch-free: the API checks prompts before a job is queued, and the
worker reads them with the same function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from gantry.jobs.datasets import BUILTIN_LABELS
from gantry.jobs.errors import InvalidInput

FILLER: Final = frozenset({"a", "an", "the", "in", "on", "at", "of", "with", "and", "background", "digit"})


def _plain(value: str) -> str:
    """A value as prompts spell it: lower case, "-" and "_" as spaces ("Smileys-and-Emotion")."""
    return re.sub(r"[-_\s]+", " ", value.lower()).strip()


def parse_label_prompt(
    prompt: str, dataset: str, labels: Sequence[str], known: Mapping[str, Sequence[str]] | None = None
) -> dict[str, int]:
    """The label values `prompt` names, as {attribute: value index}, for a model conditioned on the
    attributes `labels` of built-in data set `dataset`, or of `known` (attribute -> value names: a
    folder's sub-folders, which its checkpoint keeps). Raises InvalidInput("prompts", ...)."""
    known = known if known is not None else BUILTIN_LABELS.get(dataset, {})
    values = {name: [_plain(v) for v in known[name]] for name in labels if name in known}
    if not values:
        raise InvalidInput("prompts", f"the job was trained without labels on {dataset}: nothing to prompt")
    # phrase -> the attributes it is a value of (a digit is a value of each stacked-digits channel).
    phrases: dict[str, list[str]] = {}
    for name, names in values.items():
        for value in names:
            phrases.setdefault(value, []).append(name)
    longest = max(len(phrase.split()) for phrase in phrases)
    chosen: dict[str, int] = {}

    def choose(name: str, value: str) -> None:
        if name in chosen and chosen[name] != values[name].index(value):
            raise InvalidInput("prompts", f"{prompt!r} names two values of {name}")
        chosen[name] = values[name].index(value)

    words = re.sub(r"[,;:.!?]", " ", prompt.lower()).split()
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, value = word.partition("=")
        if eq:
            if name not in values:
                raise InvalidInput("prompts", f"{word!r}: the model's labels are {', '.join(values)}")
            value = _plain(value)
            if value not in values[name]:
                raise InvalidInput("prompts", f"{word!r}: {name} is one of {', '.join(values[name])}")
            choose(name, value)
            i += 1
            continue
        for length in range(longest, 0, -1):  # "top left" before "top"
            phrase = _plain(" ".join(words[i : i + length]))
            if length <= len(words) - i and phrase in phrases:
                owners = phrases[phrase]
                if len(owners) > 1:
                    raise InvalidInput(
                        "prompts",
                        f"{phrase!r} could be {' or '.join(owners)}: write {owners[0]}={phrase.replace(' ', '-')}",
                    )
                choose(owners[0], phrase)
                i += length
                break
        else:
            if word not in FILLER:
                allowed = "; ".join(f"{name}: {', '.join(names)}" for name, names in values.items())
                raise InvalidInput("prompts", f"{word!r} names no label value ({allowed})")
            i += 1
    if not chosen:
        raise InvalidInput("prompts", f"{prompt!r} names no label value")
    return chosen
