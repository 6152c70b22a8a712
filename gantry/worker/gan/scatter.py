"""2-D samples -> a scatter plot PNG with the true modes marked (Pillow; no matplotlib), and the
sample-job files of a 2-D model: `points.npy` (float32 N x 2) and `scatter.png`."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

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


def _extent(layout: Layout) -> tuple[float, float]:
    """The plotted square, [lo, hi] on both axes: the modes with half a mode spacing around them."""
    lo, hi = float(layout.means.min()), float(layout.means.max())
    pad = 0.5 * (hi - lo) / max(1, round(np.sqrt(layout.modes)) - 1) if layout.modes > 8 else 0.5
    return lo - pad, hi + pad


def _scale(layout: Layout) -> float:
    """Pixels per data unit."""
    lo, hi = _extent(layout)
    return (SIZE - 2 * MARGIN) / (hi - lo)


def _to_px(layout: Layout) -> Callable[[np.ndarray], np.ndarray]:
    """Data (M, 2) -> pixels (M, 2), y up, clipped to the plotted square."""
    lo, hi = _extent(layout)
    scale = _scale(layout)

    def to_px(xy: np.ndarray) -> np.ndarray:
        px = MARGIN + (np.clip(xy, lo, hi) - lo) * scale
        return np.stack([px[:, 0], SIZE - px[:, 1]], axis=1)

    return to_px


# The plot's colours: it is drawn as indices into them and written as a palette PNG (a byte a
# pixel to compress, not three: a third of the work, and of the file).
PALETTE = ((255, 255, 255), AXIS, MODE, POINT)
WHITE_AT, AXIS_AT, MODE_AT, POINT_AT = range(len(PALETTE))


def scatter_png(points: np.ndarray, layout: Layout) -> bytes:
    """Samples (N, 2) as dots over the true modes; points outside the square are drawn on its edge."""
    pixels = _background(layout).copy()
    pixels[_dots(_to_px(layout)(np.asarray(points, dtype=np.float64).reshape(-1, 2)))] = POINT_AT
    return _png(pixels, PALETTE)


def _png(indices: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> bytes:
    """An image of indices into `palette` (H, W) uint8 as a palette PNG: rows unfiltered, zlib at
    level 1. Pillow's encoder picks a filter for each row by trying them all, which for a plot of
    flat colours buys nothing: it took 3 ms of its 4 for a 512x512 RGB plot; this takes ~0.5."""
    height, width = indices.shape
    rows = np.zeros((height, 1 + width), dtype=np.uint8)  # a 0 byte before each row: no filter
    rows[:, 1:] = indices

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit indices, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(value for colour in palette for value in colour))
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


_BACKGROUNDS: dict[tuple[int, float, bytes], np.ndarray] = {}


def _background(layout: Layout) -> np.ndarray:
    """A layout's plot without its samples (the axes, and the modes under them) as PALETTE indices
    (SIZE, SIZE), read-only: drawn once a process for each layout (keyed by what it is drawn from)."""
    key = (layout.modes, float(layout.std), layout.means.tobytes())
    if key not in _BACKGROUNDS:
        if len(_BACKGROUNDS) >= 8:
            _BACKGROUNDS.clear()
        _BACKGROUNDS[key] = _draw_background(layout)
    return _BACKGROUNDS[key]


def _draw_background(layout: Layout) -> np.ndarray:
    to_px = _to_px(layout)
    image = Image.new("P", (SIZE, SIZE), WHITE_AT)
    draw = ImageDraw.Draw(image)
    origin = to_px(np.zeros((1, 2)))[0]
    draw.line([(MARGIN, origin[1]), (SIZE - MARGIN, origin[1])], fill=AXIS_AT)
    draw.line([(origin[0], MARGIN), (origin[0], SIZE - MARGIN)], fill=AXIS_AT)
    # Modes first, so the samples on top of them stay visible.
    ring = max(5.0, 3 * layout.std * _scale(layout))  # 3 std: the high-quality radius of the metrics
    for x, y in to_px(layout.means):
        draw.ellipse([x - ring, y - ring, x + ring, y + ring], outline=MODE_AT, width=2)
        draw.line([(x - 8, y), (x + 8, y)], fill=MODE_AT, width=2)
        draw.line([(x, y - 8), (x, y + 8)], fill=MODE_AT, width=2)
    pixels = np.array(image)
    pixels.flags.writeable = False
    return pixels


def _dots(px: np.ndarray) -> np.ndarray:
    """Where the dots of pixel positions (M, 2) fall: a (SIZE, SIZE) mask of the pixels Pillow's
    `ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=POINT)` fills, for all of them at once.
    Pillow truncates the box to whole pixels, so every dot is the same 4x4 disc at (int(x - 1.5),
    int(y - 1.5)); a NaN draws nothing, as there. (A loop of `ellipse` calls took ~4 ms for 2,500
    points; tests check the two agree.)"""
    px = px[np.isfinite(px).all(axis=1)]
    left = (px[:, 0] - 1.5).astype(np.int64)  # >= MARGIN - 1.5 > 0: truncation is floor
    top = (px[:, 1] - 1.5).astype(np.int64)
    hit = np.zeros((SIZE, SIZE), dtype=bool)
    for dy, dx in DOT:
        hit[top + dy, left + dx] = True
    return hit


def npy_bytes(points: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(points, dtype=np.float32))
    return buf.getvalue()


def points_result(points: np.ndarray, layout: Layout) -> SampleResult:
    """A 2-D model's sample job: no per-sample images; points.npy and scatter.png (also the grid)."""
    points = np.asarray(points, dtype=np.float32).reshape(len(points), 2)
    png = scatter_png(points, layout)
    return SampleResult(images=[], grid=png, extra={"points.npy": npy_bytes(points), "scatter.png": png})
