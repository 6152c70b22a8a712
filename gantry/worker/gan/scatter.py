"""2-D samples -> a scatter plot PNG with the true modes marked (Pillow; no matplotlib), and the
sample-job files of a 2-D model: `points.npy` (float32 N x 2) and `scatter.png`."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from gantry.worker.data.points import Layout
from gantry.worker.gan.sampler import SampleResult

SIZE = 512  # pixels per side
MARGIN = 24  # pixels around the plotted square
POINT = (31, 119, 180)  # sample colour (blue)
MODE = (214, 39, 40)  # true modes: a red ring of radius 3 std and a cross at the mean
AXIS = (200, 200, 200)
# The pixels of a dot, (row, column) from its box's top-left corner: a 4x4 square without its corners.
DOT = [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]
# zlib's fastest level: a plot of flat colours compresses nearly as well at 1 as at 6, in a third
# of the time (a tiny job writes two).
COMPRESS_LEVEL = 1


def _extent(layout: Layout) -> tuple[float, float]:
    """The plotted square, [lo, hi] on both axes: the modes with half a mode spacing around them."""
    lo, hi = float(layout.means.min()), float(layout.means.max())
    pad = 0.5 * (hi - lo) / max(1, round(np.sqrt(layout.modes)) - 1) if layout.modes > 8 else 0.5
    return lo - pad, hi + pad


def scatter_png(points: np.ndarray, layout: Layout) -> bytes:
    """Samples (N, 2) as dots over the true modes; points outside the square are drawn on its edge."""
    lo, hi = _extent(layout)
    scale = (SIZE - 2 * MARGIN) / (hi - lo)

    def to_px(xy: np.ndarray) -> np.ndarray:  # (M, 2) data -> (M, 2) pixels, y up
        px = MARGIN + (np.clip(xy, lo, hi) - lo) * scale
        return np.stack([px[:, 0], SIZE - px[:, 1]], axis=1)

    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)
    origin = to_px(np.zeros((1, 2)))[0]
    draw.line([(MARGIN, origin[1]), (SIZE - MARGIN, origin[1])], fill=AXIS)
    draw.line([(origin[0], MARGIN), (origin[0], SIZE - MARGIN)], fill=AXIS)
    # Modes first, so the samples on top of them stay visible.
    ring = max(5.0, 3 * layout.std * scale)  # 3 std: the high-quality radius of the metrics
    for x, y in to_px(layout.means):
        draw.ellipse([x - ring, y - ring, x + ring, y + ring], outline=MODE, width=2)
        draw.line([(x - 8, y), (x + 8, y)], fill=MODE, width=2)
        draw.line([(x, y - 8), (x, y + 8)], fill=MODE, width=2)
    image = _dots(image, to_px(np.asarray(points, dtype=np.float64).reshape(-1, 2)))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=COMPRESS_LEVEL)
    return buf.getvalue()


def _dots(image: Image.Image, px: np.ndarray) -> Image.Image:
    """A dot at each pixel position (M, 2): the pixels Pillow's `ellipse([x - 1.5, y - 1.5, x + 1.5,
    y + 1.5], fill=POINT)` fills, drawn at once. Pillow truncates the box to whole pixels, so every
    dot is the same 4x4 disc at (int(x - 1.5), int(y - 1.5)); a NaN draws nothing, as there.
    (A loop of `ellipse` calls took ~4 ms for 2,500 points; tests check the two agree.)"""
    px = px[np.isfinite(px).all(axis=1)]
    left = (px[:, 0] - 1.5).astype(np.int64)  # >= MARGIN - 1.5 > 0: truncation is floor
    top = (px[:, 1] - 1.5).astype(np.int64)
    hit = np.zeros((SIZE, SIZE), dtype=bool)
    for dy, dx in DOT:
        hit[top + dy, left + dx] = True
    pixels = np.array(image)
    pixels[hit] = POINT
    return Image.fromarray(pixels)


def npy_bytes(points: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(points, dtype=np.float32))
    return buf.getvalue()


def points_result(points: np.ndarray, layout: Layout) -> SampleResult:
    """A 2-D model's sample job: no per-sample images; points.npy and scatter.png (also the grid)."""
    points = np.asarray(points, dtype=np.float32).reshape(len(points), 2)
    png = scatter_png(points, layout)
    return SampleResult(images=[], grid=png, extra={"points.npy": npy_bytes(points), "scatter.png": png})
