"""Labelled figures: rows of images with a text label on the left (prompts, arithmetic terms).

Pillow only, with its default font. Small images are scaled up (nearest neighbour, whole pixels
stay visible) so that a row is at least as tall as its label.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PADDING = 2  # pixels between images, as grid_png
MIN_CELL = 48  # images are scaled up to at least this many pixels
FONT_SIZE = 11
MAX_LABEL = 48  # characters of a label before it is cut with "..."


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 3] + "..."


MARK = (220, 0, 0)  # the outline of a marked image (e.g. a frame the classifier rejected)


def labelled_rows(
    rows: list[tuple[str, list[np.ndarray | None]]],
    *,
    columns: int | None = None,
    marked: set[tuple[int, int]] | None = None,
) -> bytes:
    """PNG of one row per (label, images); images are uint8 (H, W, C), all the same size; None
    leaves a cell empty (to line up columns). A row longer than `columns` wraps, label on its first line.
    `marked`: (row, image) indices whose images get a red outline, drawn in the padding around them."""
    cells = [image for _, images in rows for image in images if image is not None]
    if not cells:
        raise ValueError("a figure needs at least one image")
    h, w, c = cells[0].shape
    scale = max(1, math.ceil(MIN_CELL / h))
    ch, cw = h * scale, w * scale
    columns = columns or max(len(images) for _, images in rows)
    marked = marked or set()
    lines: list[tuple[str, list[np.ndarray | None]]] = []
    outlined: set[tuple[int, int]] = set()  # (line, column)
    for r, (label, images) in enumerate(rows):
        for start in range(0, max(len(images), 1), columns):
            outlined |= {(len(lines), k - start) for k in range(start, start + columns) if (r, k) in marked}
            lines.append((label if start == 0 else "", images[start : start + columns]))
    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max((measure.textbbox((0, 0), _cut(label), font=font)[2] for label, _ in lines), default=0)
    left = label_width + 3 * PADDING if label_width else PADDING
    width = left + columns * (cw + PADDING)
    height = PADDING + len(lines) * (ch + PADDING)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (label, images) in enumerate(lines):
        top = PADDING + i * (ch + PADDING)
        if label:
            draw.text((PADDING, top + ch // 2), _cut(label), fill=(0, 0, 0), font=font, anchor="lm")
        for j, image in enumerate(images):
            if image is None:
                continue
            pixels = image[:, :, 0] if c == 1 else image
            tile = Image.fromarray(pixels).convert("RGB").resize((cw, ch), Image.Resampling.NEAREST)
            x = left + j * (cw + PADDING)
            canvas.paste(tile, (x, top))
            if (i, j) in outlined:
                box = (x - PADDING, top - PADDING, x + cw + PADDING - 1, top + ch + PADDING - 1)
                draw.rectangle(box, outline=MARK, width=PADDING)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
