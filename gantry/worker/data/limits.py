"""Limits that hold while a user's data set (or a super-resolution input) is read, checked BEFORE the
memory is spent: from a file's size, a .zip member's declared size, an image's header, an .npy
array's header; and again while bytes are read, since headers can lie.

- pixels per image (`GANTRY_MAX_INPUT_PIXELS`), from the header, before the image is decoded;
- files in a data set (`GANTRY_MAX_DATA_FILES`), counted before any is read;
- bytes of one file or .zip member, decompressed (`GANTRY_MAX_DATA_FILE_BYTES`);
- bytes of the whole data set (`GANTRY_MAX_DATA_BYTES`): files, .zip members decompressed, .npz
  arrays, full-size images decoded.

A breach raises `DataLimitExceeded` (an InvalidInput): the job fails at once with the message,
which names the file, the limit and its setting; it is the job's own failure, never retried.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Final

from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings, get_settings

_CHUNK: Final = 1 << 20
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError)


class DataLimitExceeded(InvalidInput):
    """A data set or input breaks one of `DataLimits`; the message names the file and the limit."""

    def __init__(self, field: str, name: str, what: str, limit: int, setting: str) -> None:
        super().__init__(field, f"{name}: {what} is over the limit of {limit:,} ({setting})")
        self.name = name
        self.setting = setting


@dataclass(frozen=True)
class DataLimits:
    """What one data set may hold; the defaults are the settings' defaults."""

    max_pixels: int = Settings.model_fields["max_input_pixels"].default
    max_files: int = Settings.model_fields["max_data_files"].default
    max_file_bytes: int = Settings.model_fields["max_data_file_bytes"].default
    max_bytes: int = Settings.model_fields["max_data_bytes"].default

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DataLimits:
        s = settings if settings is not None else get_settings()
        return cls(
            max_pixels=s.max_input_pixels,
            max_files=s.max_data_files,
            max_file_bytes=s.max_data_file_bytes,
            max_bytes=s.max_data_bytes,
        )

    def check_files(self, count: int, where: object, *, field: str = "dataset") -> None:
        if count > self.max_files:
            raise DataLimitExceeded(
                field, str(where), f"{count:,} files", self.max_files, "GANTRY_MAX_DATA_FILES"
            )

    def check_file_bytes(self, size: int, name: str, *, field: str = "dataset") -> None:
        if size > self.max_file_bytes:
            raise DataLimitExceeded(
                field, name, f"{size:,} bytes", self.max_file_bytes, "GANTRY_MAX_DATA_FILE_BYTES"
            )

    def check_pixels(self, width: int, height: int, name: str, *, field: str = "dataset") -> None:
        if width * height > self.max_pixels:
            raise DataLimitExceeded(
                field,
                name,
                f"{width}x{height} = {width * height:,} pixels",
                self.max_pixels,
                "GANTRY_MAX_INPUT_PIXELS",
            )


class ByteBudget:
    """The bytes a data set may still take (`DataLimits.max_bytes` in all)."""

    def __init__(self, limits: DataLimits, *, field: str = "dataset", what: str = "bytes") -> None:
        self.limit = limits.max_bytes
        self.left = limits.max_bytes
        self.field = field
        self.what = what

    def take(self, size: int, name: str) -> None:
        """Count `size` more bytes, read (or about to be) from `name`."""
        self.left -= size
        if self.left < 0:
            raise DataLimitExceeded(
                self.field,
                name,
                f"the data set's {self.what} in all ({self.limit - self.left:,} bytes so far)",
                self.limit,
                "GANTRY_MAX_DATA_BYTES",
            )


def read_capped(
    stream: IO[bytes], name: str, limits: DataLimits, budget: ByteBudget, *, field: str = "dataset"
) -> bytes:
    """All of `stream`, a chunk at a time: refused as soon as it passes `limits.max_file_bytes` or the
    budget, whatever a header declared (so at most one chunk more than the limit is ever held)."""
    parts: list[bytes] = []
    size = 0
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        limits.check_file_bytes(size, name, field=field)
        budget.take(len(chunk), name)
        parts.append(chunk)
    return b"".join(parts)


@contextmanager
def open_image(
    content: bytes, name: str, *, max_pixels: int, field: str = "dataset"
) -> Iterator[Image.Image]:
    """The image in `content`, opened (its header read) but not decoded, refused with
    DataLimitExceeded when it has more than `max_pixels` pixels, with InvalidInput(field) when it is
    not an image. Decoding errors inside the `with` block are reported the same way."""
    limits = DataLimits(max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(content)) as image:
            limits.check_pixels(*image.size, name, field=field)
            yield image
    except Image.DecompressionBombError as exc:  # Pillow's own ceiling, above ours unless raised
        raise DataLimitExceeded(
            field, name, f"the image ({exc})", max_pixels, "GANTRY_MAX_INPUT_PIXELS"
        ) from None
    except Image.UnidentifiedImageError:
        raise InvalidInput(field, f"{name}: not a readable image (no image format Pillow knows)") from None
    except _DECODE_ERRORS as exc:
        raise InvalidInput(field, f"{name}: not a readable image ({exc})") from None
