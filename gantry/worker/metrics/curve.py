"""A metric's values over training steps as a line plot PNG (Pillow; no matplotlib), the best step
marked: what an evaluate job of a run trained with `eval_every` saves beside its values."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 36, 40  # margins around the plotted area
LINE = (31, 119, 180)  # the series (blue)
BEST = (214, 39, 40)  # the best step (red)
GRID = (220, 220, 220)
TEXT = (40, 40, 40)


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def curve_png(name: str, points: Sequence[tuple[int, float]], *, best_step: int | None = None) -> bytes:
    """(step, value) points, in step order, as a line with a dot per point; `best_step` ringed in red."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((LEFT, 10), f"{name} over training steps", fill=TEXT, font=font)
    if not points:
        draw.text((LEFT, HEIGHT // 2), "no points", fill=TEXT, font=font)
        return _png(image)
    steps = [float(s) for s, _ in points]
    values = [v for _, v in points]
    s_lo, s_hi = min(steps), max(steps)
    v_lo, v_hi = min(values), max(values)
    if s_hi == s_lo:
        s_lo, s_hi = s_lo - 1, s_hi + 1
    if v_hi == v_lo:
        v_lo, v_hi = v_lo - 0.5 * (abs(v_lo) or 1), v_hi + 0.5 * (abs(v_hi) or 1)

    def to_px(step: float, value: float) -> tuple[float, float]:
        x = LEFT + (step - s_lo) / (s_hi - s_lo) * (WIDTH - LEFT - RIGHT)
        y = HEIGHT - BOTTOM - (value - v_lo) / (v_hi - v_lo) * (HEIGHT - TOP - BOTTOM)
        return x, y

    for value in _ticks(v_lo, v_hi):
        _, y = to_px(s_lo, value)
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=GRID)
        draw.text((4, y - 6), f"{value:.4g}", fill=TEXT, font=font)
    for step in _ticks(s_lo, s_hi):
        x, _ = to_px(step, v_lo)
        draw.line([(x, TOP), (x, HEIGHT - BOTTOM)], fill=GRID)
        draw.text((x - 12, HEIGHT - BOTTOM + 6), f"{step:.0f}", fill=TEXT, font=font)
    xy = [to_px(s, v) for s, v in zip(steps, values, strict=True)]
    if len(xy) > 1:
        draw.line(xy, fill=LINE, width=2)
    for x, y in xy:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=LINE)
    for step, value in points:
        if step == best_step:
            x, y = to_px(step, value)
            draw.ellipse([x - 7, y - 7, x + 7, y + 7], outline=BEST, width=2)
            draw.text((x + 9, y - 16), f"best: {value:.4g} at {step}", fill=BEST, font=font)
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
