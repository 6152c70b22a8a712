"""Metrics for text to image and latent walks on `shapes`, read by the attribute classifier.

- `caption_faithfulness` (text2img): prompts for every (colour, shape) pair in the data set's own
  phrasings; the share of images whose classified colour and shape both match the prompt, on the
  pairs training showed (`faithfulness_seen`) and on the held-out ones (`faithfulness_held_out`),
  the question Reed et al. 2016 (arXiv 1605.05396) ask of GAN-CLS with human raters.
- `prompt_diversity` (text2img): prompts "a red circle" leave size, position and background free;
  the distinct values among 16 images per prompt, over what 16 draws from the data's uniform
  distribution give (1.0: as varied as the data; a collapsed G, about 1/11).
- `arithmetic_accuracy` (dcgan, text2img): the DCGAN paper's vector arithmetic (arXiv 1511.06434,
  §6.3) on random attribute triples: exemplar seeds whose samples classify as "red circle", "red
  square" and "blue square", three each, averaged; is red circle - red square + blue square a blue
  circle? dcgan: colour and shape. text2img holds its text fixed, so z only decides size and
  position ("small top left" - "small right" + "large right" = "large top left").
- `interpolation_validity` (dcgan, text2img): spherical walks between random seeds; the share of
  frames the classifier reads confidently as one shape of one colour (no ghost of two shapes), and
  the same share over the walks' end frames (their seeds' own samples) and over the frames between;
  saves every walk as a figure (`interpolation-step-N.png`), the frames it rejected outlined in red.
- `sample_validity` (dcgan): "are the samples recognisable shapes?" as a number: the share of
  random samples the classifier reads confidently as one shape of one colour, and how many of the
  data's (colour, shape) pairs those cover (a collapsed G scores high validity, low coverage).

All draw from `EvaluateSpec.seed`: the same checkpoint and seed give the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import numpy as np
import torch

from gantry.worker.data import shapes
from gantry.worker.gan.figures import labelled_rows
from gantry.worker.gan.latent import LatentDecoder, load_decoder, path
from gantry.worker.gan.sampler import GENERATE_BATCH, generate
from gantry.worker.metrics import EvalContext
from gantry.worker.metrics.shapes_classifier import (
    CLASSIFY_BATCH,
    Classification,
    ShapesClassifier,
    attribute_classifier,
)

log = logging.getLogger(__name__)

NAMES: Final = {name: list(values) for name, values in shapes.ATTRIBUTES.items()}
COL: Final = {name: k for k, name in enumerate(shapes.ATTRIBUTES)}  # attribute -> label column
PAIRS: Final = [(c, s) for c in NAMES["colour"] for s in NAMES["shape"]]
HELD_OUT: Final = set(shapes.HELD_OUT_COMBINATIONS)
SEEN: Final = [pair for pair in PAIRS if pair not in HELD_OUT]

PROMPTS_PER_PAIR: Final = 8  # faithfulness: prompts per (colour, shape), each with its own phrasing
IMAGES_PER_PROMPT: Final = 4
DIVERSITY_IMAGES: Final = 16
CONFIDENT: Final = 0.9  # classifier probability for "reads as" (its test accuracy is ~100%)
POOL: Final = 1024  # arithmetic: seeds decoded and classified to find exemplars
EXEMPLARS: Final = 3  # per term, as the DCGAN paper
TRIALS: Final = 64
SAMPLES: Final = 1024  # sample_validity
WALKS: Final = 32  # interpolation: seed pairs
FRAMES: Final = 8
# Images decoded and classified per chunk, between progress reports: a multiple of G's and the
# classifier's batches, so that both see the same batches (and give the same values) as in one call.
CHUNK: Final = max(GENERATE_BATCH, CLASSIFY_BATCH)
assert CHUNK % GENERATE_BATCH == 0 and CHUNK % CLASSIFY_BATCH == 0


def _short_prompt(colour: str, shape: str) -> str:
    """The phrasing that names colour and shape only ("a red circle", "an orange cross")."""
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def _context(ctx: EvalContext) -> tuple[LatentDecoder, ShapesClassifier, np.random.Generator]:
    decoder = load_decoder(ctx.checkpoint, device=ctx.device, code_walk=ctx.spec.code_walk)
    classifier = attribute_classifier(ctx.train_spec.image_size)
    return decoder, classifier, np.random.default_rng(ctx.spec.seed)


def _one_shape_one_colour(found: Classification) -> np.ndarray:
    """bool (N,): the classifier reads the image confidently as one shape and one colour."""
    return (found.confidence[:, [COL["shape"], COL["colour"]]] >= CONFIDENT).all(1)


def _classifier_accuracy(classifier: ShapesClassifier) -> dict[str, float]:
    """The classifier's worst per-attribute accuracy on its own test images (should be >= 0.98)."""
    return {"shapes_classifier_accuracy": min(classifier.accuracy.values())}


def _classify_chunks(
    decode: Callable[[slice], np.ndarray], count: int, classifier: ShapesClassifier, ctx: EvalContext
) -> Classification:
    """The classification of `count` images that `decode(rows)` makes, CHUNK at a time, reporting
    after each chunk (and stopping there if the job was cancelled)."""
    parts = []
    for start in range(0, count, CHUNK):
        parts.append(classifier.classify(decode(slice(start, start + CHUNK))))
        ctx.report(min(start + CHUNK, count), count)
    return Classification(
        labels=np.concatenate([p.labels for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
    )


def _classify_latents(
    decoder: LatentDecoder, z: torch.Tensor, text: str | None, classifier: ShapesClassifier, ctx: EvalContext
) -> Classification:
    """The classification of G(z) (text2img: G(z, φ(text))), in chunks."""
    return _classify_chunks(lambda rows: decoder.decode(z[rows], text), len(z), classifier, ctx)


def _classify_prompts(
    decoder: LatentDecoder,
    prompts: list[str],
    per_prompt: int,
    classifier: ShapesClassifier,
    ctx: EvalContext,
) -> Classification:
    """per_prompt images for each prompt, prompt-major (P * per_prompt rows), classified in chunks."""
    assert decoder.text is not None
    phi = decoder.text.embed(prompts)  # type: ignore[attr-defined]  # (P, E)
    z = decoder.sample(len(prompts) * per_prompt, torch.Generator().manual_seed(ctx.spec.seed))
    cond = phi.repeat_interleave(per_prompt, 0)  # (P * per_prompt, E)

    def decode(rows: slice) -> np.ndarray:
        return generate(decoder.G, z[rows], cond=cond[rows], device=decoder.device)

    return _classify_chunks(decode, len(z), classifier, ctx)


def caption_faithfulness(ctx: EvalContext) -> dict[str, float]:
    decoder, classifier, rng = _context(ctx)
    prompts, wanted = [], []
    for colour, shape in PAIRS:
        for _ in range(PROMPTS_PER_PAIR):
            size, position, background = (
                NAMES[a][rng.integers(len(NAMES[a]))] for a in ("size", "position", "background")
            )
            variant = int(rng.integers(shapes.CAPTION_VARIANTS))
            prompts.append(shapes.caption(shape, colour, size, position, background, variant=variant))
            wanted.append((colour, shape, size, position, prompts[-1]))
    got = _classify_prompts(decoder, prompts, IMAGES_PER_PROMPT, classifier, ctx).labels
    colour_ok = np.empty(len(got), bool)
    shape_ok = np.empty(len(got), bool)
    layout_ok: list[bool] = []  # size and position, where the prompt names them
    seen = np.empty(len(got), bool)
    for i, (colour, shape, size, position, prompt) in enumerate(wanted):
        rows = slice(i * IMAGES_PER_PROMPT, (i + 1) * IMAGES_PER_PROMPT)
        colour_ok[rows] = got[rows, COL["colour"]] == NAMES["colour"].index(colour)
        shape_ok[rows] = got[rows, COL["shape"]] == NAMES["shape"].index(shape)
        seen[rows] = (colour, shape) not in HELD_OUT
        if any(word in prompt.split() for word in shapes.SIZE_WORDS[size]):
            layout_ok += (
                (got[rows, COL["size"]] == NAMES["size"].index(size))
                & (got[rows, COL["position"]] == NAMES["position"].index(position))
            ).tolist()
    both = colour_ok & shape_ok
    values = {
        "faithfulness_seen": float(both[seen].mean()),
        "faithfulness_held_out": float(both[~seen].mean()),
        "colour_faithfulness": float(colour_ok[seen].mean()),
        "shape_faithfulness": float(shape_ok[seen].mean()),
        **_classifier_accuracy(classifier),
    }
    if layout_ok:
        values["layout_faithfulness"] = float(np.mean(layout_ok))
    return values


def _expected_distinct(values: int, draws: int) -> float:
    """E[distinct values] among `draws` uniform draws from `values` values."""
    return values * (1 - (1 - 1 / values) ** draws)


def prompt_diversity(ctx: EvalContext) -> dict[str, float]:
    decoder, classifier, _ = _context(ctx)
    prompts = [_short_prompt(colour, shape) for colour, shape in SEEN]
    got = _classify_prompts(decoder, prompts, DIVERSITY_IMAGES, classifier, ctx).labels
    layouts = len(NAMES["size"]) * len(NAMES["position"])
    layout, background = [], []
    for i in range(len(prompts)):
        rows = got[i * DIVERSITY_IMAGES : (i + 1) * DIVERSITY_IMAGES]
        layout.append(len({(s, p) for s, p in rows[:, [COL["size"], COL["position"]]].tolist()}))
        background.append(len(set(rows[:, COL["background"]].tolist())))
    return {
        "diversity": float(np.mean(layout) / _expected_distinct(layouts, DIVERSITY_IMAGES)),
        "diversity_background": float(
            np.mean(background) / _expected_distinct(len(NAMES["background"]), DIVERSITY_IMAGES)
        ),
        **_classifier_accuracy(classifier),
    }


def _arithmetic_trials(
    decoder: LatentDecoder,
    classifier: ShapesClassifier,
    rng: np.random.Generator,
    ctx: EvalContext,
    *,
    attributes: tuple[str, str],
    text: str | None,
    targets: set[tuple[int, int]] | None,
) -> tuple[int, int]:
    """(successes, trials) of  A1B1 - A1B2 + A2B2 = A2B1  over the two attributes, exemplars found among
    POOL seeds whose samples classify confidently."""
    a, b = COL[attributes[0]], COL[attributes[1]]
    seeds = np.arange(POOL)
    found = _classify_latents(decoder, decoder.latents(seeds.tolist()), text, classifier, ctx)
    sure = (found.confidence[:, [a, b]] >= CONFIDENT).all(1)
    by_pair: dict[tuple[int, int], list[int]] = {}
    for seed, label in zip(seeds[sure].tolist(), found.labels[sure][:, [a, b]].tolist(), strict=True):
        by_pair.setdefault((label[0], label[1]), []).append(seed)
    usable = {pair for pair, members in by_pair.items() if len(members) >= EXEMPLARS}
    triples = [
        (a1, b1, a2, b2)
        for a1, b1 in usable
        for a2, b2 in usable
        if a1 != a2 and b1 != b2 and (a1, b2) in usable and (targets is None or (a2, b1) in targets)
    ]
    if not triples:
        log.warning("arithmetic: no usable triples among %d seeds (pairs found: %s)", POOL, sorted(by_pair))
        return 0, 0
    z_terms, wanted = [], []
    for k in rng.choice(len(triples), size=TRIALS, replace=len(triples) < TRIALS):
        a1, b1, a2, b2 = triples[k]
        means = [
            decoder.latents(rng.choice(by_pair[pair], EXEMPLARS, replace=False).tolist()).mean(0)
            for pair in ((a1, b1), (a1, b2), (a2, b2))
        ]
        z_terms.append(means[0] - means[1] + means[2])
        wanted.append((a2, b1))
    result = classifier.classify(decoder.decode(torch.stack(z_terms), text)).labels[:, [a, b]]
    successes = sum(tuple(row) == target for row, target in zip(result.tolist(), wanted, strict=True))
    return successes, len(wanted)


def arithmetic_accuracy(ctx: EvalContext) -> dict[str, float]:
    decoder, classifier, rng = _context(ctx)
    if decoder.text is None:  # z decides everything: colour and shape, as the example
        seen = {(NAMES["colour"].index(c), NAMES["shape"].index(s)) for c, s in SEEN}
        ok, n = _arithmetic_trials(
            decoder, classifier, rng, ctx, attributes=("colour", "shape"), text=None, targets=seen
        )
    else:  # fixed text names colour and shape: z decides size and position
        ok = n = 0
        for colour, shape in [SEEN[k] for k in rng.choice(len(SEEN), 4, replace=False)]:
            good, tried = _arithmetic_trials(
                decoder,
                classifier,
                rng,
                ctx,
                attributes=("size", "position"),
                text=_short_prompt(colour, shape),
                targets=None,
            )
            ok, n = ok + good, n + tried
    return {
        "arithmetic_accuracy": ok / n if n else 0.0,
        "arithmetic_trials": float(n),
        **_classifier_accuracy(classifier),
    }


def interpolation_validity(ctx: EvalContext) -> dict[str, float]:
    decoder, classifier, rng = _context(ctx)
    pairs = rng.choice(2**31 - 1, size=(WALKS, 2), replace=False)
    texts: list[str | None] = [None] * WALKS
    if decoder.text is not None:
        texts = [_short_prompt(*SEEN[k]) for k in rng.choice(len(SEEN), WALKS)]
    valid = []  # (WALKS, FRAMES)
    rows: list[tuple[str, list[np.ndarray | None]]] = []
    for walk, ((seed_a, seed_b), text) in enumerate(zip(pairs.tolist(), texts, strict=True)):
        frames = decoder.decode(path(decoder.latent(seed_a), decoder.latent(seed_b), FRAMES, "slerp"), text)
        valid.append(_one_shape_one_colour(classifier.classify(frames)))
        rows.append((f"{text or f'{seed_a} -> {seed_b}'}: {valid[-1].sum()}/{FRAMES}", list(frames)))
        ctx.report(walk + 1, WALKS)
    walks = np.array(valid)
    # What the classifier rejected, to look at: every walk, its rejected frames outlined in red.
    rejected = set(zip(*np.nonzero(~walks), strict=True))  # (walk, frame)
    reading = f"-{ctx.spec.code_walk}" if ctx.spec.code_walk else ""
    ctx.save(f"interpolation{reading}-step-{ctx.step:08d}.png", labelled_rows(rows, marked=rejected))
    return {
        "interpolation_validity": float(walks.mean()),
        # The same frames split: the walks' own samples, and what lies between them. Garbage in between
        # shows as inner well below ends; ends as low as inner means the samples themselves are unclear.
        "interpolation_validity_ends": float(walks[:, [0, -1]].mean()),
        "interpolation_validity_inner": float(walks[:, 1:-1].mean()),
        **_classifier_accuracy(classifier),
    }


def validity(images: np.ndarray, classifier: ShapesClassifier) -> dict[str, float]:
    """sample_validity and pair_coverage of uint8 images (N, H, W, 3)."""
    return _validity(classifier.classify(images))


def _validity(found: Classification) -> dict[str, float]:
    valid = _one_shape_one_colour(found)
    labels = found.labels[valid][:, [COL["colour"], COL["shape"]]].tolist()
    pairs = {(NAMES["colour"][c], NAMES["shape"][s]) for c, s in labels}
    return {"sample_validity": float(valid.mean()), "pair_coverage": len(pairs & set(SEEN)) / len(SEEN)}


def sample_validity(ctx: EvalContext) -> dict[str, float]:
    decoder, classifier, rng = _context(ctx)
    seeds = rng.choice(2**31 - 1, size=SAMPLES, replace=False).tolist()
    return {
        **_validity(_classify_latents(decoder, decoder.latents(seeds), None, classifier, ctx)),
        **_classifier_accuracy(classifier),
    }
