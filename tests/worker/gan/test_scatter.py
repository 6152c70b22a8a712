"""The scatter plot's dots drawn at once (`scatter._dots`) are the pixels Pillow's `ellipse` draws
for each point, which is how the plots pinned elsewhere (test_checkpoint's digests) were drawn."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gantry.worker.data.points import layout
from gantry.worker.gan import scatter


def _ellipses(image: Image.Image, px: np.ndarray) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for x, y in px:
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=scatter.POINT)
    return image


@pytest.mark.parametrize("seed", range(4))
def test_the_dots_are_the_pixels_of_pillows_ellipses(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Anywhere in the plotted square, at every fraction of a pixel, its edges included.
    px = rng.uniform(scatter.MARGIN, scatter.SIZE - scatter.MARGIN, size=(4000, 2))
    px[:4] = [
        [scatter.MARGIN, scatter.MARGIN],
        [scatter.SIZE - scatter.MARGIN] * 2,
        [100.5, 99.5],
        [100.0, 100.0],
    ]
    px[4:8] = [[np.nan, 100.0], [100.0, np.nan], [np.nan, np.nan], [200.49999, 300.50001]]
    background = Image.new("RGB", (scatter.SIZE, scatter.SIZE), "white")
    ImageDraw.Draw(background).line([(0, 256), (511, 256)], fill=scatter.AXIS)  # dots go on top
    got = np.array(background)
    got[scatter._dots(px)] = scatter.POINT
    assert np.array_equal(got, np.asarray(_ellipses(background, px)))
    assert (got == scatter.POINT).all(axis=-1).sum() > 1000  # it drew


def test_a_plot_keeps_the_points_outside_on_its_edge_and_draws_no_nan() -> None:
    points = np.array([[np.nan, 0.0], [1e9, -1e9], [-np.inf, np.inf], [0.0, 0.0]], dtype=np.float32)
    pixels = np.asarray(Image.open(io.BytesIO(scatter.scatter_png(points, layout("ring8")))).convert("RGB"))
    blue = np.argwhere((pixels == scatter.POINT).all(axis=-1))
    # Three dots: the two far points on opposite corners, and the origin's.
    assert len(blue) == 3 * len(scatter.DOT)
    rows, cols = blue[:, 0], blue[:, 1]
    assert rows.min() < scatter.MARGIN and rows.max() > scatter.SIZE - scatter.MARGIN - 2
    assert cols.min() < scatter.MARGIN and cols.max() > scatter.SIZE - scatter.MARGIN - 2


def test_the_plot_is_a_palette_png_of_the_colours_it_was_drawn_in() -> None:
    rng = np.random.default_rng(0)
    indices = rng.integers(0, len(scatter.PALETTE), size=(37, 53), dtype=np.uint8)
    image = Image.open(io.BytesIO(scatter._png(indices, scatter.PALETTE)))
    image.load()
    assert image.mode == "P" and image.size == (53, 37)
    assert np.array_equal(
        np.asarray(image.convert("RGB")), np.array(scatter.PALETTE, dtype=np.uint8)[indices]
    )
    # A plot: white, grey axes, red modes, blue samples, nothing else.
    plot = Image.open(io.BytesIO(scatter.scatter_png(rng.normal(size=(500, 2)), layout("grid25"))))
    colours = {tuple(c) for c in np.asarray(plot.convert("RGB")).reshape(-1, 3)}
    assert colours == set(scatter.PALETTE)
