"""Generator output -> uint8 pixels -> PNG bytes, one image or a padded grid (Pillow, no torchvision);
and the other way, training images as the loop keeps them and feeds them to D."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

GRID_PADDING = 2  # pixels between images and around the grid, as torchvision's make_grid


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C) on the CPU."""
    if x.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
    pixels = ((x.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 image (H, W, C) with C = 1 (grayscale) or 3 (RGB) -> PNG bytes.

    The encoding is deterministic: the same pixels give the same bytes.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 (H, W, 1|3), got {image.dtype} {image.shape}")
    # Pillow infers mode L from a 2-D array and RGB from (H, W, 3).
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def grid_png(images: np.ndarray, nrow: int) -> bytes:
    """uint8 images (N, H, W, C) -> one PNG, `nrow` images per row, 2-pixel black padding."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) batch, got shape {images.shape}")
    n, h, w, c = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    p = GRID_PADDING
    canvas = np.zeros((rows * (h + p) + p, cols * (w + p) + p, c), dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = p + (i // cols) * (h + p), p + (i % cols) * (w + p)
        canvas[top : top + h, left : left + w] = image
    return png_bytes(canvas)


def resident_images(images: np.ndarray, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """A training set's uint8 (N, H, W, C) images as uint8 (N, C, H, W) on `device`, kept there for the
    run: a quarter of the memory of float images, and a minibatch drawn is one small gather that
    `scaled` makes float (`channels_last`: that memory layout, which indexing keeps)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def scaled(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (x / 127.5 - 1), in their memory layout."""
    return images.float().div_(127.5).sub_(1.0)
