"""The built-in `shapes` data set: one solid coloured shape per image, with attribute labels and captions.

Every image has five attributes, stored as the columns of `labels` (N x 5, int64) in the order of
`ATTRIBUTES`: shape, colour, size, position (a 3x3 grid) and background. Each image also has a
caption, one of several phrasings picked deterministically from the seed ("a small red circle in the
top left", "top-left: little red disc", "red circle, small, upper left" ...).

The train split never contains the (colour, shape) pairs in `HELD_OUT_COMBINATIONS`; the test split
does, so a text-to-image model (Reed et al. 2016, arXiv 1605.05396) can be asked for combinations it
has only seen separately. Train and test are drawn from independent random streams of the same seed.

Shapes are drawn from signed distance functions in pixel units: a pixel's coverage is
`clip(0.5 - distance, 0, 1)`, a one-pixel anti-aliased edge as good as heavy supersampling and
vectorised over the whole batch (20,000 images at 32x32 in well under a second).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from typing import Final

import numpy as np

from gantry.worker.data.base import CaptionGrammar, ImageData

log = logging.getLogger(__name__)

SHAPES: Final = ("circle", "square", "triangle", "cross")
# Saturated, well separated hues (RGB); white and orange make eight.
COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 40),
    "blue": (40, 90, 255),
    "yellow": (245, 225, 30),
    "magenta": (225, 40, 225),
    "cyan": (30, 215, 230),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
}
SIZES: Final = ("small", "large")
POSITIONS: Final = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
BACKGROUNDS: Final[dict[str, tuple[int, int, int]]] = {
    "black": (0, 0, 0),
    "grey": (96, 96, 96),
    "navy": (16, 24, 64),
}
# attribute name -> value names, in the column order of `labels`.
ATTRIBUTES: Final[dict[str, list[str]]] = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "size": list(SIZES),
    "position": list(POSITIONS),
    "background": list(BACKGROUNDS),
}
# (colour, shape) pairs that never appear in the train split; each colour and each shape still does.
HELD_OUT_COMBINATIONS: Final = (
    ("green", "triangle"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("magenta", "cross"),
)
DEFAULT_COUNT: Final = {"train": 20_000, "test": 2_000}

# Geometry, as fractions of the image side. Cell centres are pulled in from the thirds (1/6, 1/2, 5/6)
# so that a large shape in a corner cell still fits inside the image with its jitter.
CELL_CENTRES: Final = (0.22, 0.5, 0.78)
HALF_EXTENT: Final = {"small": 0.11, "large": 0.18}  # half the bounding box (a circle's radius)
POSITION_JITTER: Final = 0.015  # uniform +- offset of the centre
SIZE_JITTER: Final = 0.04  # uniform +- relative change of the half extent
CROSS_ARM: Final = 0.36  # half thickness of a cross's arms, relative to its half extent
_CHUNK = 2048  # images rendered at once (bounds memory at large sizes)

# Caption vocabulary. The colour word is always the colour's name; shapes, sizes and positions have
# synonyms so that a text encoder cannot rely on one spelling.
SHAPE_WORDS: Final = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
}
SIZE_WORDS: Final = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_WHERE: Final = {  # completes "a small red circle ..."
    "top left": ("in the top left", "in the upper left corner", "at the top left"),
    "top": ("at the top", "at the top centre", "in the upper middle"),
    "top right": ("in the top right", "in the upper right corner", "at the top right"),
    "left": ("on the left", "at the left edge", "in the middle on the left"),
    "centre": ("in the centre", "in the middle", "at the center"),
    "right": ("on the right", "at the right edge", "in the middle on the right"),
    "bottom left": ("in the bottom left", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom centre", "in the lower middle"),
    "bottom right": ("in the bottom right", "in the lower right corner", "at the bottom right"),
}
_PLACE: Final = {  # a position on its own: "top-left: ..."
    "top left": ("top-left", "upper left"),
    "top": ("top", "top centre"),
    "top right": ("top-right", "upper right"),
    "left": ("left", "middle left"),
    "centre": ("centre", "middle"),
    "right": ("right", "middle right"),
    "bottom left": ("bottom-left", "lower left"),
    "bottom": ("bottom", "bottom centre"),
    "bottom right": ("bottom-right", "lower right"),
}
_TEMPLATES: Final = (
    "a {size} {colour} {shape} {where}",
    "{place}: {size} {colour} {shape}",
    "{colour} {shape}, {size}, {place}",
    "a {size} {colour} {shape} {where} on a {background} background",
    "{size} {colour} {shape}, {place}, {background} background",
    "there is a {size} {colour} {shape} {where}",
    # Leaves size, position and background to chance: what a text-to-image model's noise z must
    # then vary (Reed et al. 2016, arXiv 1605.05396, sec. 5: z captures what the text leaves out).
    "{article} {colour} {shape}",
)
CAPTION_VARIANTS: Final = len(_TEMPLATES) * 3 * 2 * 3  # templates x size x shape x position words
# The attributes some phrasings leave out ("a red circle"); every caption names shape and colour.
LEFT_FREE: Final = ("size", "position", "background")
# attribute -> the caption words that name a value of it (`named_attributes`).
_NAMING_WORDS: Final = {
    "shape": {w for words in SHAPE_WORDS.values() for phrase in words for w in phrase.split()} - {"sign"},
    "colour": set(COLOURS),
    "size": {w for words in SIZE_WORDS.values() for w in words},
    "position": {
        w
        for phrases in (*_WHERE.values(), *_PLACE.values())
        for phrase in phrases
        for w in re.findall(r"[a-z]+", phrase)
    }
    - {"in", "the", "at", "on", "corner", "edge"},
    "background": set(BACKGROUNDS),
}


def caption(shape: str, colour: str, size: str, position: str, background: str, *, variant: int = 0) -> str:
    """Describe one image. `variant` (0 <= variant < CAPTION_VARIANTS) picks the phrasing; 0 is the
    plain one: "a small red circle in the top left"."""
    # `variant` read as mixed-radix digits: template, size word, shape word, position word.
    t, k = variant % len(_TEMPLATES), variant // len(_TEMPLATES)
    size_words, shape_words = SIZE_WORDS[size], SHAPE_WORDS[shape]
    where, place = _WHERE[position], _PLACE[position]
    return _TEMPLATES[t].format(
        size=size_words[k % 3 % len(size_words)],
        colour=colour,
        shape=shape_words[k // 3 % 2 % len(shape_words)],
        where=where[k // 6 % 3],
        place=place[k // 6 % 3 % len(place)],
        background=background,
        article="an" if colour[:1] in "aeiou" else "a",
    )


def value_phrase(attribute: str, value: str) -> str:
    """The words the plain phrasing uses for a value of an attribute a caption may leave free:
    "large", "in the top left", "on a grey background"."""
    if attribute == "size":
        return SIZE_WORDS[value][0]
    if attribute == "position":
        return _WHERE[value][0]
    if attribute == "background":
        return f"on a {value} background"
    raise ValueError(f"{attribute!r} is not left free by any caption; choose one of {', '.join(LEFT_FREE)}")


def named_attributes(captions: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """bool (N, K): whether each caption names a value of each attribute in `names` ("a red circle"
    names shape and colour and leaves size, position and background free)."""
    return CAPTION_GRAMMAR.named(captions, names)


# What the captions declare to models that read them beside the labels (`ImageData.caption_grammar`).
CAPTION_GRAMMAR: Final[CaptionGrammar] = CaptionGrammar(
    naming_words={name: frozenset(words) for name, words in _NAMING_WORDS.items()},
    phrases={name: {value: value_phrase(name, value) for value in ATTRIBUTES[name]} for name in LEFT_FREE},
)


def _sdf(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, negative inside) from pixel centres to a shape of half extent r,
    centred at the origin; y grows downwards."""
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - r
    if shape == "triangle":
        # Apex (0, -r), base corners (+-r, r): the base edge and the two slanted edges (normals / sqrt 5).
        slant = (2.0 * np.abs(dx) - dy - r) / np.sqrt(5.0)
        return np.maximum(dy - r, slant)
    if shape == "cross":
        t = CROSS_ARM * r
        adx, ady = np.abs(dx), np.abs(dy)
        return np.minimum(np.maximum(adx - r, ady - t), np.maximum(adx - t, ady - r))
    raise ValueError(f"unknown shape {shape!r}")


def render_images(
    labels: np.ndarray, *, image_size: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw images (N x H x W x 3 uint8) for labels (N x 5, columns as in `ATTRIBUTES`).

    Without `rng` each shape sits exactly at its cell centre at its nominal size; with it, the centre
    and size are jittered a little (the labels stay true)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, len(ATTRIBUTES))
    n = len(labels)
    shape_id, colour_id, size_id, position_id, background_id = labels.T
    # Shape centres and half extents, in pixels.
    centres = np.asarray(CELL_CENTRES)
    cx, cy = centres[position_id % 3], centres[position_id // 3]
    r = np.asarray([HALF_EXTENT[s] for s in SIZES])[size_id]
    if rng is not None:
        cx = cx + rng.uniform(-POSITION_JITTER, POSITION_JITTER, n)
        cy = cy + rng.uniform(-POSITION_JITTER, POSITION_JITTER, n)
        r = r * (1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER, n))
    cx, cy, r = cx * image_size, cy * image_size, r * image_size
    fg = np.asarray(list(COLOURS.values()), dtype=np.float32)[colour_id]
    bg = np.asarray(list(BACKGROUNDS.values()), dtype=np.float32)[background_id]

    pixel = np.arange(image_size, dtype=np.float32) + 0.5  # pixel centres
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        coverage = np.empty((stop - start, image_size, image_size), dtype=np.float32)
        for k, shape in enumerate(SHAPES):
            idx = np.flatnonzero(shape_id[start:stop] == k)
            if idx.size == 0:
                continue
            i = start + idx
            dx = pixel[None, None, :] - cx[i, None, None].astype(np.float32)  # n x 1 x W
            dy = pixel[None, :, None] - cy[i, None, None].astype(np.float32)  # n x H x 1
            sdf = _sdf(shape, dx, dy, r[i, None, None].astype(np.float32))  # n x H x W
            coverage[idx] = np.clip(0.5 - sdf, 0.0, 1.0)
        # Blend one channel at a time: contiguous N x H x W arithmetic is several times faster than
        # broadcasting over a trailing axis of 3. Adding 0.5 before the cast to uint8 rounds.
        base, delta = bg[start:stop], fg[start:stop] - bg[start:stop]
        for c in range(3):
            out[start:stop, ..., c] = base[:, c, None, None] + delta[:, c, None, None] * coverage + 0.5
    return out


def render_image(
    shape: str, colour: str, size: str, position: str, background: str = "black", *, image_size: int = 32
) -> np.ndarray:
    """One image (H x W x 3 uint8) from attribute value names, without jitter."""
    values = {"shape": shape, "colour": colour, "size": size, "position": position, "background": background}
    row = [_index(name, values[name]) for name in ATTRIBUTES]
    return render_images(np.asarray([row]), image_size=image_size)[0]


def _index(attribute: str, value: str) -> int:
    names = ATTRIBUTES[attribute]
    if value not in names:
        raise ValueError(f"unknown {attribute} {value!r}; choose one of {', '.join(names)}")
    return names.index(value)


def _sample_labels(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    """N x 5 labels, uniform over the allowed (colour, shape) pairs and over the other attributes."""
    held_out = {(_index("colour", c), _index("shape", s)) for c, s in HELD_OUT_COMBINATIONS}
    pairs = [
        (c, s)
        for c in range(len(COLOURS))
        for s in range(len(SHAPES))
        if split == "test" or (c, s) not in held_out
    ]
    pair = np.asarray(pairs, dtype=np.int64)[rng.integers(0, len(pairs), n)]
    labels = np.empty((n, len(ATTRIBUTES)), dtype=np.int64)
    labels[:, 0], labels[:, 1] = pair[:, 1], pair[:, 0]
    labels[:, 2] = rng.integers(0, len(SIZES), n)
    labels[:, 3] = rng.integers(0, len(POSITIONS), n)
    labels[:, 4] = rng.integers(0, len(BACKGROUNDS), n)
    return labels


def label_space(names: Sequence[str], split: str = "train") -> np.ndarray:
    """Every combination of the attributes `names` (in that order) that the split contains, (M, K)
    int64: all of them, except on the train split the held-out (colour, shape) pairs when both are named."""
    columns = [list(ATTRIBUTES).index(name) for name in names]  # ValueError for an unknown name
    rows = np.array(list(itertools.product(*(range(len(ATTRIBUTES[n])) for n in names))), dtype=np.int64)
    if split == "train" and "colour" in names and "shape" in names:
        held_out = {(_index("colour", c), _index("shape", s)) for c, s in HELD_OUT_COMBINATIONS}
        colour, shape = rows[:, list(names).index("colour")], rows[:, list(names).index("shape")]
        keep = [(c, s) not in held_out for c, s in zip(colour.tolist(), shape.tolist(), strict=True)]
        rows = rows[np.asarray(keep)]
    assert len(columns) == rows.shape[1]
    return rows


def generate(image_size: int, *, seed: int = 0, split: str = "train", count: int | None = None) -> ImageData:
    """The `shapes` data set: `count` images (default 20,000 for train, 2,000 for test), the same bytes
    for the same (image_size, seed, split, count)."""
    if split not in DEFAULT_COUNT:
        raise ValueError(f"split must be one of {', '.join(DEFAULT_COUNT)}, not {split!r}")
    n = DEFAULT_COUNT[split] if count is None else count
    # Independent streams per split, so train and test are fixed by the seed and never coincide.
    rng = np.random.default_rng([seed, list(DEFAULT_COUNT).index(split)])
    labels = _sample_labels(rng, n, split)
    images = render_images(labels, image_size=image_size, rng=rng)
    variants = rng.integers(0, CAPTION_VARIANTS, n)
    names = [ATTRIBUTES[a] for a in ATTRIBUTES]
    captions = [
        caption(*(names[j][v] for j, v in enumerate(row)), variant=int(variant))
        for row, variant in zip(labels.tolist(), variants.tolist(), strict=True)
    ]
    log.debug("generated %d shapes images at %dx%d (seed %d, %s)", n, image_size, image_size, seed, split)
    return ImageData(
        images=images,
        labels=labels,
        captions=captions,
        attributes={k: list(v) for k, v in ATTRIBUTES.items()},
        caption_grammar=CAPTION_GRAMMAR,
    )
