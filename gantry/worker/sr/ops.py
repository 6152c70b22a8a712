"""Image operations and quality measures for super-resolution, as the SR literature computes them.

- LR images are made by bicubic downsampling (Ledig et al. 2016, arXiv 1609.04802, §3.1), and the
  bicubic baseline upsamples them back. Pillow's BICUBIC is the Keys kernel with a = -0.5 and, when
  shrinking, a kernel widened by the scale (antialiasing): the same filter as MATLAB's `imresize`.
- PSNR and SSIM are measured on the luminance Y of ITU-R BT.601 ("studio swing", 16..235, MATLAB's
  `rgb2ycbcr`), with `scale` pixels cropped from each border (the convention of SRCNN, Dong et al.
  2014, arXiv 1501.00092, followed by SRGAN's Table 2). SSIM (Wang et al. 2004) uses the paper's
  11x11 Gaussian window with sigma 1.5 and data_range 255, through scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop H x W (x C) to multiples of `scale` (bottom and right), so LR x scale = HR exactly."""
    h, w = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:h, :w]


def bicubic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 H x W x C (C = 1 or 3) -> uint8 height x width x C, bicubic (antialiased when shrinking)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 H x W x (1|3), got {image.dtype} {image.shape}")
    plane = image[:, :, 0] if image.shape[2] == 1 else image
    out = np.array(Image.fromarray(plane).resize((width, height), Image.Resampling.BICUBIC))
    return out[:, :, None] if out.ndim == 2 else out


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8 or float RGB H x W x 3 in 0..255 (or H x W x 1, taken as gray) -> float64 Y in 16..235."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels on every side (the SR convention: border = scale)."""
    if border <= 0:
        return image
    return image[border:-border, border:-border]


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape arrays; inf when they are identical."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 255.0) -> float:
    """SSIM of two 2-D arrays with Wang et al.'s Gaussian window (sigma 1.5, 11 x 11)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(a, np.float64),
            np.asarray(b, np.float64),
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def y_psnr_ssim(sr: np.ndarray, hr: np.ndarray, *, scale: int) -> tuple[float, float]:
    """(PSNR, SSIM) of a super-resolved RGB image against its HR original, on Y, `scale` border cropped."""
    y_sr, y_hr = shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale)
    return psnr(y_sr, y_hr), ssim(y_sr, y_hr)
