"""`gantry data inspect`: what a folder or .zip of pictures (or an .npz) holds, before a job trains on
it: the count, sizes and aspect ratios, colour modes and formats, the classes `labels=folder` would
make, the captions a sidecar gives, the files training would skip, and a contact sheet of thumbnails
as training would see them.

Pillow and numpy only, never torch: the CLI runs this in its own process (a base install without the
worker's packages is told to install them).
"""

from __future__ import annotations

import statistics
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.folders import ReadOptions, open_pictures, to_array
from gantry.worker.data.limits import DataLimitExceeded, DataLimits, open_image

SHEET_CELLS: Final = 64  # thumbnails on a contact sheet, spread evenly over the data set
SHEET_COLUMNS: Final = 8
_GAP: Final = 2


@dataclass
class Report:
    source: str
    kind: str  # folder, zip or npz
    count: int  # readable pictures
    width: dict[str, float] = field(default_factory=dict)  # min, median, max
    height: dict[str, float] = field(default_factory=dict)
    aspect: dict[str, float] = field(default_factory=dict)  # width / height
    modes: dict[str, int] = field(default_factory=dict)  # RGBA, RGB, L, P, ...
    formats: dict[str, int] = field(default_factory=dict)  # PNG, JPEG, WEBP, ...
    labels: dict[str, int] = field(default_factory=dict)  # sub-folder (labels=folder class) -> pictures
    outside_folders: int = 0  # pictures in no sub-folder (no class with labels=folder)
    captions_file: str | None = None
    captioned: int = 0  # readable pictures with a caption
    uncaptioned: int = 0
    unmatched_captions: list[str] = field(default_factory=list)  # sidecar names that match no picture
    caption_examples: list[str] = field(default_factory=list)
    bad_files: list[dict[str, str]] = field(default_factory=list)  # {file, problem}: what training skips
    contact_sheet: str | None = None
    sheet_cells: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect(
    path: Path,
    *,
    sheet: Path,
    shown: str | None = None,
    options: ReadOptions | None = None,
    thumb: int = 64,
    limits: DataLimits | None = None,
) -> Report:
    """A report on the folder, .zip or .npz at local `path` (`shown`: its name in the report, e.g. the
    URI it was fetched from), with a contact sheet written to `sheet`. InvalidInput for what is not
    a data set; a data set over a limit of GANTRY_MAX_DATA_* is refused as a job would refuse it."""
    limits = limits if limits is not None else DataLimits.from_settings()
    options = options if options is not None else ReadOptions()
    where = shown or str(path)
    if not path.exists():
        raise InvalidInput("dataset", f"{where}: no such file or folder")
    if path.suffix.lower() == ".npz" and path.is_file():
        report, thumbs = _npz(path, where, thumb, limits)
    elif path.is_dir() or path.suffix.lower() == ".zip":
        report, thumbs = _pictures(path, where, options, thumb, limits)
    else:
        raise InvalidInput("dataset", f"{where}: not a folder, .zip or .npz file")
    if thumbs:
        sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(thumbs).save(sheet, format="PNG")
        report.contact_sheet, report.sheet_cells = str(sheet), len(thumbs)
    return report


def _pictures(
    path: Path, where: str, options: ReadOptions, thumb: int, limits: DataLimits
) -> tuple[Report, list[np.ndarray]]:
    report = Report(source=where, kind="folder" if path.is_dir() else "zip", count=0)
    sizes: list[tuple[int, int]] = []
    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    folders: Counter[str] = Counter()
    thumbs: list[np.ndarray] = []
    with open_pictures(path, limits, captions_file=options.captions_file, shown=where) as pictures:
        n = len(pictures.entries)
        on_sheet = (
            set(np.linspace(0, n - 1, min(n, SHEET_CELLS)).round().astype(int).tolist()) if n else set()
        )
        captions: dict[str, str] = {}
        if pictures.captions is not None:
            captions, report.unmatched_captions = pictures.captions.lookup(pictures.entries)
            report.captions_file = pictures.captions.name
        for i, entry in enumerate(pictures.entries):
            try:
                with open_image(entry.read(), entry.where, max_pixels=limits.max_pixels) as image:
                    image.load()  # a truncated file fails here, as it would in training
                    sizes.append(image.size)
                    modes[image.mode] += 1
                    formats[image.format or "?"] += 1
                    if i in on_sheet:
                        thumbs.append(to_array(image, thumb, options))
            except InvalidInput as exc:
                if isinstance(exc, DataLimitExceeded) and exc.setting != "GANTRY_MAX_INPUT_PIXELS":
                    raise
                report.bad_files.append({"file": entry.name, "problem": exc.message})
                continue
            folders[entry.folder or ""] += 1
            if entry.name in captions:
                report.captioned += 1
                if len(report.caption_examples) < 5:
                    report.caption_examples.append(f"{entry.name}: {captions[entry.name]}")
            else:
                report.uncaptioned += 1
    report.count = len(sizes)
    report.outside_folders = folders.pop("", 0)
    report.labels = dict(sorted(folders.items()))
    report.modes, report.formats = dict(modes.most_common()), dict(formats.most_common())
    if sizes:
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        report.width, report.height = _spread(widths), _spread(heights)
        report.aspect = {k: round(v, 3) for k, v in _spread([w / h for w, h in sizes]).items()}
    return report, thumbs


def _npz(path: Path, where: str, thumb: int, limits: DataLimits) -> tuple[Report, list[np.ndarray]]:
    from gantry.worker.data.files import load_files

    # At its own size when it is square (what every .npz of gantry's is); resized otherwise.
    try:
        with zipfile.ZipFile(path) as archive, archive.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape = read(f)[0]
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        shape = ()
    side = int(shape[1]) if len(shape) >= 3 else thumb
    data = load_files(path, image_size=side, limits=limits)
    n, _, w, c = data.images.shape
    report = Report(source=where, kind="npz", count=n)
    report.width = report.height = {"min": w, "median": w, "max": w}
    report.aspect = {"min": 1.0, "median": 1.0, "max": 1.0}
    report.modes = {"L" if c == 1 else "RGB": n}
    if data.labels is not None:
        column = data.labels if data.labels.ndim == 1 else data.labels[:, 0]
        report.labels = {str(k): int(v) for k, v in sorted(Counter(column.tolist()).items())}
    if data.captions is not None:
        report.captioned = n
        report.caption_examples = data.captions[:5]
    picks = np.linspace(0, n - 1, min(n, SHEET_CELLS)).round().astype(int)
    thumbs = []
    for i in picks:
        plane = data.images[i, ..., 0] if c == 1 else data.images[i]
        thumbs.append(np.asarray(Image.fromarray(plane).resize((thumb, thumb), Image.Resampling.LANCZOS)))
    return report, thumbs


def _spread(values: list[float] | list[int]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def contact_sheet(thumbs: list[np.ndarray]) -> Image.Image:
    """Thumbnails (H x W or H x W x 3 uint8, one size) in a grid of SHEET_COLUMNS, on white."""
    side = thumbs[0].shape[0]
    columns = min(SHEET_COLUMNS, len(thumbs))
    rows = -(-len(thumbs) // columns)
    sheet = Image.new("RGB", (columns * (side + _GAP) + _GAP, rows * (side + _GAP) + _GAP), "white")
    for i, array in enumerate(thumbs):
        tile = Image.fromarray(array).convert("RGB")
        sheet.paste(tile, (_GAP + (i % columns) * (side + _GAP), _GAP + (i // columns) * (side + _GAP)))
    return sheet
