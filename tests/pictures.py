"""A small folder of pictures as users have them, made in the test: PNG, JPEG and WebP; alpha,
palette transparency and grayscale; odd sizes and aspect ratios; two sub-folders (classes), one
picture outside them; a truncated JPEG, a file that is not an image and one over a pixel limit of
1,000; and a captions sidecar (CSV, or JSON lines)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)
GOOD = [  # the readable pictures under the pixel limit, in sorted order
    "cats/gray.jpg",
    "cats/rgba.png",
    "cats/wide.webp",
    "dogs/la.png",
    "dogs/palette.png",
    "dogs/tall.png",
    "top.png",
]
BAD = {  # file -> what the warning or error says of it
    "cats/big.png": "40x40 = 1,600 pixels is over the limit of 1,000",
    "dogs/notes.png": "not a readable image",
    "dogs/truncated.jpg": "not a readable image",
}
CAPTIONS = {  # by path, or bare name where unique; dogs/tall.png has none
    "cats/gray.jpg": "a grey cat",
    "rgba.png": "a red cat, half see-through",
    "cats/wide.webp": "a wide blue cat",
    "dogs/la.png": "a grey dog, see-through",
    "palette.png": "a red dog on a palette",
    "top.png": "a blue thing at the top",
    "cats/gone.png": "a cat that is not there",
}
MAX_PIXELS = 1000


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture_files() -> dict[str, bytes]:
    """Relative path -> file bytes."""
    rgba = np.zeros((12, 20, 4), dtype=np.uint8)  # 20 wide, 12 high
    rgba[:, 10:] = (*RED, 255)  # right half opaque red; left half transparent "green" (hidden)
    rgba[:, :10] = (0, 255, 0, 0)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette([*RED, *(0, 255, 0)] + [0] * 762)
    palette.paste(1, (0, 0, 5, 10))  # left half: index 1 (green), declared transparent
    palette.info["transparency"] = 1
    la = np.zeros((14, 14, 2), dtype=np.uint8)
    la[..., 0], la[7:, :, 1] = 100, 255  # bottom half opaque grey, top half transparent
    jpeg = _encode(Image.new("RGB", (24, 24), BLUE), "JPEG")
    return {
        "cats/gray.jpg": _encode(Image.new("L", (16, 16), 90), "JPEG"),
        "cats/rgba.png": _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "cats/wide.webp": _encode(Image.new("RGB", (30, 10), BLUE), "WEBP", lossless=True),
        "cats/big.png": _encode(Image.new("RGB", (40, 40), RED), "PNG"),
        "dogs/la.png": _encode(Image.fromarray(la, "LA"), "PNG"),
        "dogs/palette.png": _encode(palette, "PNG", transparency=1),
        "dogs/tall.png": _encode(Image.new("RGB", (8, 24), RED), "PNG"),
        "dogs/truncated.jpg": jpeg[: len(jpeg) // 2],
        "dogs/notes.png": b"not a picture, whatever its name says",
        "top.png": _encode(Image.new("RGB", (16, 16), BLUE), "PNG"),
    }


def captions_csv() -> bytes:
    rows = ["file,caption", *(f'{name},"{text}"' for name, text in CAPTIONS.items())]
    return ("\n".join(rows) + "\n").encode()


def captions_jsonl() -> bytes:
    lines = [json.dumps({"file": name, "caption": text}) for name, text in CAPTIONS.items()]
    return ("\n".join(lines) + "\n").encode()


def make_folder(
    root: Path, *, captions: str | None = "captions.csv", files: dict[str, bytes] | None = None
) -> Path:
    """The pictures under `root`, with a captions sidecar named `captions` (CSV or JSON lines by its
    extension; None: none)."""
    for name, content in (files or picture_files()).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    if captions:
        (root / captions).write_bytes(captions_jsonl() if captions.endswith(".jsonl") else captions_csv())
    return root


def make_zip(path: Path, *, top: str = "pets", captions: str | None = "captions.jsonl") -> Path:
    """The pictures in a .zip, all under folder `top` (a zipped folder), with a JSON-lines sidecar."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in picture_files().items():
            archive.writestr(f"{top}/{name}", content)
        if captions:
            archive.writestr(
                f"{top}/{captions}", captions_jsonl() if captions.endswith(".jsonl") else captions_csv()
            )
    return path
