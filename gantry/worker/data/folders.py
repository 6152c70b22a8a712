"""A folder or .zip of the user's pictures, as training (and `gantry data inspect`) reads it.

- Which files: every .png/.jpg/.jpeg/.bmp/.webp inside, searched recursively, in sorted path order;
  hidden files and folders (and macOS's `__MACOSX`) are skipped, other files ignored. A .zip whose
  pictures all sit in one top folder (a zipped folder) is read as that folder.
- Labels (`--set labels=folder`): a picture's class is the name of the first sub-folder it is in,
  classes numbered in sorted name order (torchvision's ImageFolder does the same); a picture at the top
  has no class.
- Captions: a sidecar file in the folder or .zip, `captions_file` or else `captions.csv` /
  `captions.jsonl` where present. CSV: rows of file, caption (a header row `file,caption` is
  skipped); JSON lines: {"file": ..., "caption": ...} (Hugging Face's `file_name` and `text` keys
  too). `file` is the picture's path inside the folder, or its bare name where that is unique.
- Each picture becomes a square of the job's size: transparent pixels composited on `background`,
  grayscale kept as one channel when every picture is grayscale, a picture that is not square
  centre-cropped or padded with the background (`fit`), then resized with Lanczos.

Nothing here imports torch: `gantry data inspect` runs it in the CLI's process.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.limits import ByteBudget, DataLimitExceeded, DataLimits, read_capped

IMAGE_EXTENSIONS: Final = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CAPTION_FILES: Final = ("captions.csv", "captions.jsonl")
GRAY_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_FILE_KEYS: Final = ("file", "file_name", "image")
_CAPTION_KEYS: Final = ("caption", "text")


@dataclass(frozen=True)
class ReadOptions:
    """How pictures are read: the `data` options of a train spec (`specs.options.ImageFiles`)."""

    background: tuple[int, int, int] = (255, 255, 255)
    fit: str = "crop"  # crop | pad
    bad_files: str = "skip"  # skip | refuse
    labels: bool = False  # classes from sub-folder names
    captions_file: str = ""  # "": CAPTION_FILES where present
    need_captions: bool = False  # a picture without a caption is a bad file (text2img)


@dataclass(frozen=True)
class Entry:
    """One picture: its path inside the folder or .zip, its name in messages, how to read its bytes."""

    name: str
    where: str
    read: Callable[[], bytes]

    @property
    def folder(self) -> str | None:
        """The first sub-folder the picture is in (its class with labels=folder); None at the top."""
        parts = PurePosixPath(self.name).parts
        return parts[0] if len(parts) > 1 else None


@dataclass(frozen=True)
class Pictures:
    """The pictures of a folder or .zip, and its captions sidecar if it has one."""

    where: str
    entries: list[Entry]
    captions: Captions | None


@dataclass(frozen=True)
class Captions:
    """A captions sidecar, read: picture name -> caption."""

    name: str  # the sidecar's path inside the folder or .zip
    by_name: dict[str, str]

    def lookup(self, entries: list[Entry]) -> tuple[dict[str, str], list[str]]:
        """({picture name: caption} for the pictures it names, [its names that match no picture]):
        a name matches a picture's path, or else the bare name of exactly one picture."""
        by_path = {e.name: e.name for e in entries}
        bare: dict[str, list[str]] = {}
        for e in entries:
            bare.setdefault(PurePosixPath(e.name).name, []).append(e.name)
        found: dict[str, str] = {}
        unmatched = []
        for key, caption in self.by_name.items():
            name = by_path.get(key) or (bare[key][0] if len(bare.get(key, ())) == 1 else None)
            if name is None:
                unmatched.append(key)
            else:
                found[name] = caption
        return found, unmatched


def bad(message: str) -> InvalidInput:
    return InvalidInput("dataset", message)


def is_image_name(relative: PurePosixPath) -> bool:
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
    return not hidden and relative.suffix.lower() in IMAGE_EXTENSIONS


def folder_image_paths(root: Path, limits: DataLimits, *, field: str = "dataset") -> list[PurePosixPath]:
    """The relative path of each image under root, sorted; refused once there are more than
    `limits.max_files` (counted while the folder is walked, before any is read)."""
    found: list[PurePosixPath] = []
    for p in root.rglob("*"):
        if p.is_file() and is_image_name(rel := PurePosixPath(p.relative_to(root))):
            found.append(rel)
            limits.check_files(len(found), root, field=field)
    return sorted(found)


def read_file(path: Path, limits: DataLimits, budget: ByteBudget, *, field: str = "dataset") -> bytes:
    """A file's bytes: its size checked before it is read, and again while it is read."""
    name = str(path)
    size = path.stat().st_size
    limits.check_file_bytes(size, name, field=field)
    if size > budget.left:
        budget.take(size, name)
    with path.open("rb") as f:
        return read_capped(f, name, limits, budget, field=field)


@contextmanager
def open_pictures(
    path: Path, limits: DataLimits, *, captions_file: str = "", shown: str | None = None
) -> Iterator[Pictures]:
    """The pictures of folder or .zip `path` (`shown`: how messages name it, e.g. its URI), readable
    inside the `with` block."""
    where = shown or str(path)
    if path.is_dir():
        yield _folder(path, where, limits, captions_file)
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise bad(f"{where}: not a readable .zip file ({exc})") from None
    with archive:
        yield _zip(archive, where, limits, captions_file)


def _folder(root: Path, where: str, limits: DataLimits, captions_file: str) -> Pictures:
    budget = ByteBudget(limits)
    entries = [
        Entry(str(rel), f"{where}/{rel}", partial(read_file, root / rel, limits, budget))
        for rel in folder_image_paths(root, limits)
    ]
    sidecar = None
    for name in (captions_file,) if captions_file else CAPTION_FILES:
        if (root / name).is_file():
            sidecar = parse_captions(name, read_file(root / name, limits, budget), where=where)
            break
        if captions_file:
            raise bad(f"{where}: no captions file {captions_file} inside (captions_file)")
    return Pictures(where, entries, sidecar)


def _zip(archive: zipfile.ZipFile, where: str, limits: DataLimits, captions_file: str) -> Pictures:
    """The count and every member's declared size are checked before anything is extracted; each
    member is then read with a cap, since a .zip's headers can lie."""
    members = sorted(
        (i for i in archive.infolist() if not i.is_dir() and is_image_name(PurePosixPath(i.filename))),
        key=lambda info: info.filename,
    )
    limits.check_files(len(members), where)
    declared = 0
    for info in members:
        limits.check_file_bytes(info.file_size, f"{where}: {info.filename}")
        declared += info.file_size
        if declared > limits.max_bytes:
            raise DataLimitExceeded(
                "dataset",
                f"{where}: {info.filename}",
                f"the .zip's {declared:,} bytes (decompressed) so far",
                limits.max_bytes,
                "GANTRY_MAX_DATA_BYTES",
            )
    # A zipped folder ("pics/a/1.png", "pics/b/2.png") is read as the folder "pics".
    tops = {PurePosixPath(i.filename).parts[0] for i in members}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in i.filename for i in members) else ""
    budget = ByteBudget(limits, what="bytes decompressed")

    def read(info: zipfile.ZipInfo) -> bytes:
        try:
            with archive.open(info) as member:
                return read_capped(member, f"{where}: {info.filename}", limits, budget)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise bad(f"{where}: cannot extract {info.filename} ({exc})") from None

    entries = [
        Entry(i.filename.removeprefix(prefix), f"{where}: {i.filename}", partial(read, i)) for i in members
    ]
    names = set(archive.namelist())
    sidecar = None
    for name in (captions_file,) if captions_file else CAPTION_FILES:
        member = next((m for m in (prefix + name, name) if m in names), None)
        if member is not None:
            sidecar = parse_captions(name, read(archive.getinfo(member)), where=where)
            break
        if captions_file:
            raise bad(f"{where}: no captions file {captions_file} inside (captions_file)")
    return Pictures(where, entries, sidecar)


def parse_captions(name: str, content: bytes, *, where: str) -> Captions:
    """A CSV or JSON-lines captions file (by its extension; JSON lines when it starts with "{")."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad(f"{where}: {name} is not UTF-8 text") from None
    by_name: dict[str, str] = {}
    if name.lower().endswith((".jsonl", ".json")) or text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise bad(f"{where}: {name} line {number} is not JSON ({exc.msg})") from None
            file = next((row[k] for k in _FILE_KEYS if isinstance(row, dict) and k in row), None)
            caption = next((row[k] for k in _CAPTION_KEYS if isinstance(row, dict) and k in row), None)
            if not isinstance(file, str) or not isinstance(caption, str):
                raise bad(f'{where}: {name} line {number}: expected {{"file": ..., "caption": ...}}')
            by_name[file.strip()] = caption.strip()
    else:
        for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and row[0].strip().lower() in _FILE_KEYS:
                continue  # a header
            if len(row) < 2:
                raise bad(f"{where}: {name} line {number}: expected file,caption")
            by_name[row[0].strip()] = ",".join(row[1:]).strip()
    return Captions(name, by_name)


def to_array(image: Image.Image, image_size: int, options: ReadOptions) -> np.ndarray:
    """A decoded image as uint8 H x W (grayscale) or H x W x 3: alpha composited on the background,
    made square (`options.fit`) and resized."""
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    gray = image.mode in GRAY_MODES
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit or float grayscale: scale to 0..255 (Pillow's own conversion clips instead).
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
        image = Image.fromarray(np.rint(np.clip(values / top, 0, 1) * 255).astype(np.uint8))
    elif "A" in image.getbands() or "transparency" in image.info:
        # Composite on the background: transparent pixels often hold arbitrary colours.
        rgba = np.asarray(image.convert("LA" if gray else "RGBA"), dtype=np.float32)
        alpha = rgba[..., -1:] / 255.0
        back = np.array([_luminance(options.background)] if gray else options.background, np.float32)
        flat = rgba[..., :-1] * alpha + back * (1.0 - alpha)
        image = Image.fromarray(np.rint(flat[..., 0] if gray else flat).astype(np.uint8))
    image = image.convert("L" if gray else "RGB")
    return np.asarray(square(image, image_size, fit=options.fit, background=options.background))


def _luminance(rgb: tuple[int, int, int]) -> int:
    return round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])  # ITU-R 601, as Pillow's "L"


def square(
    image: Image.Image, image_size: int, *, fit: str = "crop", background: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """Centre-crop (or pad with `background`) to a square and resize to image_size x image_size."""
    w, h = image.size
    if (w, h) == (image_size, image_size):
        return image
    if w != h and fit == "pad":
        side = max(w, h)
        fill: int | tuple[int, int, int] = _luminance(background) if image.mode == "L" else background
        canvas = Image.new(image.mode, (side, side), fill)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    elif w != h:
        # Crop first: resizing with `box=` would let the filter bleed in pixels from outside the square.
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size == (image_size, image_size):
        return image
    return image.resize((image_size, image_size), Image.Resampling.LANCZOS)
